"""kill -9 soak of ``voxelfm embed`` and ``voxelfm pretrain`` (issue 13).

Each command is started again and again and SIGKILLed at a random (seeded) moment, then resumed,
and finally run to the end. The result is compared with an uninterrupted reference run:

* embed: scans stored / lost / duplicated (a finished scan embedded again) / corrupted (entry
  unreadable, non-finite, or not bit-identical to the reference), orphaned reader workers left
  alive 5 s after the kill, second-run lock refusals (stale locks), stray temporary files;
* pretrain: checkpoints stored / corrupted, stray ``.tmp`` files, metric steps lost / duplicated,
  and the largest difference of the final teacher weights from the reference run.

    python benchmarks/soak_kill.py --work /tmp/voxelfm-soak --n 16 --embed-kills 10 --pretrain-kills 10 --steps 20

Uses a tiny phantom cohort (``voxelfm phantom --size tiny``), a random vit-tiny model for
embedding and a 2-block ViT for pretraining, so the whole soak takes a few minutes on a CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

VOXELFM = [str(Path(sys.executable).with_name("voxelfm"))]  # the console script of this environment
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

PRETRAIN_OVERRIDES = {
    "student.embed_dim": 36, "student.depth": 2, "student.num_heads": 1, "student.num_register_tokens": 2,
    "student.drop_path_rate": 0.0,
    "dino.head_n_prototypes": 64, "dino.head_hidden_dim": 32, "dino.head_bottleneck_dim": 16,
    "ibot.head_n_prototypes": 64, "ibot.head_hidden_dim": 32, "ibot.head_bottleneck_dim": 16,
    "train.batch_size_per_gpu": 2, "train.grad_accum_steps": 1, "train.total_batch_size": "null",
    "train.num_workers": 0, "train.device": "cpu", "crops.global_crops_size": 28, "crops.local_crops_size": 14,
    "crops.local_crops_number": 2, "checkpointing.period": 2, "checkpointing.max_to_keep": 2,
    "monitor.log_period": 1, "monitor.progress": "false", "monitor.tensorboard": "false", "monitor.rank_window": 8,
}


def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == parent]
        out += kids
        frontier += kids
    return out


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def start_and_kill(cmd: list[str], delay: float) -> dict[str, object]:
    """Start ``cmd``; SIGKILL it after ``delay`` s unless it ended; report what was left behind."""
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    if proc.poll() is not None:
        return {"killed": False, "returncode": proc.returncode, "stderr": proc.stderr.read() if proc.stderr else "",
                "orphans": 0}
    kids = descendants(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    end = time.monotonic() + 5
    while any(alive(k) for k in kids) and time.monotonic() < end:
        time.sleep(0.05)
    orphans = [k for k in kids if alive(k)]
    for k in orphans:  # leave no mess behind, but count them
        os.kill(k, signal.SIGKILL)
    return {"killed": True, "returncode": None, "stderr": "", "orphans": len(orphans), "children": len(kids)}


# -- embed ----------------------------------------------------------------------------------------
def soak_embed(work: Path, rng: random.Random, kills: int, span: tuple[float, float]) -> dict[str, object]:
    import numpy as np

    from voxelfm.embed import EmbeddingStore

    cohort, model = work / "cohort", work / "model"
    manifest = cohort / "labels.csv"
    base = [*VOXELFM, "embed", str(manifest), "--model", str(model), "--workers", "2", "--device", "cpu",
            "--no-progress"]
    t0 = time.perf_counter()
    ref = run([*base, "--out", str(work / "ref_store")])
    if ref.returncode != 0:
        raise SystemExit(f"reference embed failed: {ref.stderr[-2000:]}")
    reference_seconds = time.perf_counter() - t0
    store_dir = work / "store"
    ref_store = EmbeddingStore(work / "ref_store")
    expected = set(ref_store.ids())
    sources = sorted((cohort / "images").iterdir())
    rounds, touched = [], 0
    for _ in range(kills):
        if expected <= set(EmbeddingStore(store_dir).ids()):
            # all done: give the next run work by changing three sources (same pixels, new mtime)
            for path in rng.sample(sources, 3):
                os.utime(path, ns=(time.time_ns(), time.time_ns()))
                touched += 1
        delay = rng.uniform(*span) * reference_seconds
        rounds.append(start_and_kill([*base, "--out", str(store_dir)], delay))
    before_final = len(expected & set(EmbeddingStore(store_dir).ids()))
    final = run([*base, "--out", str(store_dir)])
    store = EmbeddingStore(store_dir)
    ok = set(store.ids())
    records = store.records(all_attempts=True)
    ok_records = records[records.status == "ok"]
    duplicated = int((ok_records.groupby(["scan_id", "source_fingerprint"]).size() - 1).clip(lower=0).sum())
    corrupted = 0
    for scan_id in sorted(ok):
        try:
            a, b = store.get(scan_id), ref_store.get(scan_id)
        except Exception:  # noqa: BLE001 - any unreadable entry counts as corrupted
            corrupted += 1
            continue
        same = np.array_equal(a.cls, b.cls) and np.array_equal(a.patch, b.patch)
        if not (np.isfinite(a.cls).all() and np.isfinite(a.patch).all() and same):
            corrupted += 1
    stray = [p.name for p in (store_dir / "entries").glob(".*")] if (store_dir / "entries").is_dir() else []
    torn = 0
    for manifest_file in store_dir.glob("manifest*.jsonl"):
        for line in manifest_file.read_text().splitlines():
            try:
                json.loads(line)
            except json.JSONDecodeError:
                torn += 1
    return {
        "scans": len(expected), "kills": sum(bool(r["killed"]) for r in rounds),
        "runs_finished_before_kill": sum(not r["killed"] for r in rounds),
        "lock_refusals": sum("writing to this store" in str(r["stderr"]) for r in rounds),
        "orphaned_workers": sum(int(r["orphans"]) for r in rounds),
        "workers_seen_at_kill": sum(int(r.get("children", 0)) for r in rounds),
        "sources_touched": touched, "stored_before_final_run": before_final, "final_exit": final.returncode, "stored": len(ok & expected), "lost": len(expected - ok),
        "duplicated": duplicated, "corrupted": corrupted, "stray_temp_files": len(stray), "torn_manifest_lines": torn,
        "reference_seconds": round(reference_seconds, 1),
    }


# -- pretrain -------------------------------------------------------------------------------------
def soak_pretrain(work: Path, rng: random.Random, kills: int, span: tuple[float, float], steps: int) -> dict[str, object]:
    import torch

    from voxelfm.ssl import read_metrics
    from voxelfm.ssl.checkpoint import list_checkpoints, load_checkpoint

    overrides = [f"{k}={v}" for k, v in {**PRETRAIN_OVERRIDES, "train.max_steps": steps,
                                          "datasets.0.index_path": work / "prepared" / "index.csv"}.items()]
    base = [*VOXELFM, "pretrain", "run", "default", *overrides]
    t0 = time.perf_counter()
    ref = run([*base, "--out", str(work / "ref_run")])
    if ref.returncode != 0:
        raise SystemExit(f"reference pretrain failed: {ref.stderr[-2000:]}")
    reference_seconds = time.perf_counter() - t0
    run_dir = work / "run"
    rounds = []
    for _ in range(kills):
        rounds.append(start_and_kill([*base, "--out", str(run_dir)], rng.uniform(*span) * reference_seconds))
    before_final = (list_checkpoints(run_dir) or [(0, None)])[-1][0]
    final = run([*base, "--out", str(run_dir)])
    checkpoints = list_checkpoints(run_dir)
    corrupted = 0
    for _, path in checkpoints:
        try:
            load_checkpoint(path)
        except Exception:  # noqa: BLE001
            corrupted += 1
    stray = list((run_dir / "checkpoints").glob(".*.tmp-*"))
    steps_seen = [int(r["step"]) for r in read_metrics(run_dir)]
    lost = sorted(set(range(1, steps + 1)) - set(steps_seen))
    duplicated = len(steps_seen) - len(set(steps_seen))
    diff = None
    if checkpoints and list_checkpoints(work / "ref_run"):
        a = load_checkpoint(checkpoints[-1][1])["model"]
        b = load_checkpoint(list_checkpoints(work / "ref_run")[-1][1])["model"]
        keys = [k for k in a if k.startswith("teacher.")]
        diff = max(float((a[k].float() - b[k].float()).abs().max()) for k in keys)
        bitwise = all(torch.equal(a[k], b[k]) for k in keys)
    return {
        "steps": steps, "kills": sum(bool(r["killed"]) for r in rounds),
        "runs_finished_before_kill": sum(not r["killed"] for r in rounds),
        "checkpoint_step_before_final_run": before_final, "final_exit": final.returncode, "final_step": checkpoints[-1][0] if checkpoints else None, "checkpoints_stored": len(checkpoints),
        "checkpoints_corrupted": corrupted, "stray_tmp_files": len(stray), "metric_steps_lost": len(lost),
        "metric_steps_duplicated": duplicated, "teacher_max_abs_diff_vs_reference": diff,
        "teacher_bit_identical": bitwise if diff is not None else None,
        "reference_seconds": round(reference_seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/voxelfm-soak"))
    parser.add_argument("--n", type=int, default=16, help="phantom scans")
    parser.add_argument("--embed-kills", type=int, default=10)
    parser.add_argument("--pretrain-kills", type=int, default=10)
    parser.add_argument("--steps", type=int, default=20, help="pretraining steps")
    parser.add_argument("--span", type=float, nargs=2, default=(0.3, 0.9),
                        help="kill between these fractions of the reference run's duration after the start")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = args.work
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    t0 = time.perf_counter()
    for cmd in ([*VOXELFM, "phantom", str(work / "cohort"), "--n", str(args.n), "--size", "tiny", "--seed", "0"],
                [*VOXELFM, "model", "init", str(work / "model"), "--preset", "vit-tiny", "--max-patches", "512"],
                [*VOXELFM, "pretrain", "prepare", str(work / "cohort" / "images"), "--out", str(work / "prepared")]):
        done = run(cmd)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed: {done.stderr[-2000:]}")
    setup = time.perf_counter() - t0
    embed = soak_embed(work, rng, args.embed_kills, tuple(args.span))
    pretrain = soak_pretrain(work, rng, args.pretrain_kills, tuple(args.span), args.steps)
    result = {"embed": embed, "pretrain": pretrain, "setup_seconds": round(setup, 1),
              "total_seconds": round(time.perf_counter() - t0, 1), "seed": args.seed}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
