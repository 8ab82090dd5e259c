"""``voxelfm embed`` throughput (scans/min): reader workers vs none, on a synthetic NIfTI cohort.

Writes ``--n`` body-phantom CT volumes (anisotropic spacing, so preprocessing really resamples)
as NIfTI, then embeds them with the same model into fresh stores with ``--workers 0`` and
``--workers 2``, alternating the order over ``--rounds`` rounds, and reports the best throughput
of each. With 0 workers, reading + preprocessing and the forward pass run one after the other;
with workers they overlap.

``--dtypes fp32 bf16 auto`` instead times the whole ``voxelfm embed`` command (a child process per
run: imports, model load, reading + preprocessing, forward, store write) for each ``--dtype``,
alternating the order over the rounds, from a model directory written once (``--layerscale`` sets
every LayerScale gamma, so that bf16 vs fp32 measures more than near-identity blocks). The child
times each stage (wall and CPU s) and the CLS cosine of every scan to the fp32 store is reported.

Usage::

    nice -n 10 .venv/bin/python benchmarks/bench_embed.py --n 12 --preset vit-tiny --max-patches 512
    nice -n 10 .venv/bin/python benchmarks/bench_embed.py --phantom small --n 4 --preset vit-base \\
        --max-patches 512 --workers 0 --threads 2 --layerscale 0.5 --dtypes fp32 bf16 auto --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: What the child of ``--dtypes`` times: module, attribute path of the function (looked up at call
#: time by ``voxelfm embed``), stage name.
STAGES = (("voxelfm.models", "load_model", "load_model"),
          ("voxelfm.embed.precision", "choose_dtype_for_jobs", "auto_check"),
          ("voxelfm.embed.batch", "_read_job", "read_preprocess"),
          ("voxelfm.embed.batch", "_features", "forward"),
          ("voxelfm.embed.store", "EmbeddingStore.write", "store_write"))


def write_cohort(folder: Path, n: int, shape: tuple[int, int, int], seed: int = 0) -> None:
    """``n`` NIfTI phantoms: air, a soft-tissue body with lungs and a spine, noise; 2.5 × 0.8 × 0.8 mm."""
    from voxelfm.core import Geometry
    from voxelfm.io import write_nifti

    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    for i in range(n):
        hu = np.full(shape, -1000.0, dtype=np.float32)
        scale = 0.75 + 0.1 * rng.random()
        body = (y / scale) ** 2 + (x / (scale + 0.1)) ** 2 < 1
        hu[body] = 40.0
        for side in (-1, 1):
            lung = ((x - 0.4 * side) / 0.28) ** 2 + (y / 0.45) ** 2 + (z / 1.1) ** 2 < 1
            hu[lung & body] = -850.0
        hu[((y - 0.55) / 0.12) ** 2 + (x / 0.12) ** 2 < 1] = 700.0
        hu += rng.normal(0, 15, shape).astype(np.float32)
        write_nifti(hu, Geometry(shape, (2.5, 0.8, 0.8)), folder / f"scan{i:03d}.nii.gz")


def stage_times(model, sources: list[str], spec, workers: int) -> dict[str, float]:
    """Mean seconds of read+preprocess and of the forward pass, measured one after the other, and
    the best speed-up ``workers`` readers could give with a free core each: (p + f) / max(p / W, f)."""
    from voxelfm.embed import features_from_preprocessed
    from voxelfm.io import load_ct
    from voxelfm.preprocess import preprocess

    pre_s, fwd_s = [], []
    for source in sources:
        t0 = time.perf_counter()
        pre = preprocess(load_ct(source), spec)
        t1 = time.perf_counter()
        features_from_preprocessed(model, pre)
        pre_s.append(t1 - t0)
        fwd_s.append(time.perf_counter() - t1)
    p, f = float(np.mean(pre_s)), float(np.mean(fwd_s))
    return {"preprocess_s": p, "forward_s": f, "workers": workers,
            "max_overlap_speedup": (p + f) / max(p / max(workers, 1), f)}


def _timed(fn: Callable[..., Any], name: str, calls: dict[str, list[tuple[float, float]]]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        w, c = time.perf_counter(), time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            calls.setdefault(name, []).append((time.perf_counter() - w, time.process_time() - c))
    return wrapper


def timed_cli(argv: list[str], threads: int) -> dict[str, Any]:
    """Run ``voxelfm`` with ``argv`` in this process, the :data:`STAGES` timed (wall s, CPU s, calls,
    and (wall, CPU) of each call); the child side of :func:`run_cli`."""
    import importlib

    import torch

    from voxelfm.cli.main import app

    torch.set_num_threads(threads)
    calls: dict[str, list[tuple[float, float]]] = {}
    for module, path, name in STAGES:
        owner: Any = importlib.import_module(module)
        *parents, attr = path.split(".")
        for parent in parents:
            owner = getattr(owner, parent)
        setattr(owner, attr, _timed(getattr(owner, attr), name, calls))
    wall0, cpu0 = time.perf_counter(), time.process_time()
    try:
        app(argv, standalone_mode=False)
    except SystemExit as exc:
        if exc.code:
            raise
    return {"stages": {k: {"wall_s": sum(w for w, _ in v), "cpu_s": sum(c for _, c in v), "calls": len(v),
                           "per_call": v} for k, v in calls.items()},
            "command_wall_s": time.perf_counter() - wall0, "command_cpu_s": time.process_time() - cpu0,
            "threads": torch.get_num_threads()}


def run_cli(argv: list[str], threads: int) -> dict[str, Any]:
    """``voxelfm argv`` in a child process (:func:`timed_cli`): its wall time, CPU s (all threads and
    children), the child's stage times and the ``--dtype auto`` line it printed."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "COLUMNS": "200"}
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import bench_embed; "
            "print('@@' + json.dumps(bench_embed.timed_cli(sys.argv[3:], int(sys.argv[2]))))")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent), str(threads), *argv],
                          env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise SystemExit(f"voxelfm {' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    lines = proc.stdout.splitlines()
    out = json.loads(next(line[2:] for line in lines if line.startswith("@@")))
    auto = [line.strip() for line in lines + proc.stderr.splitlines() if line.startswith("--dtype auto")]
    return {**out, "wall_s": wall, "cpu_s": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
            "auto_line": auto[0] if auto else None}


def cls_cosines(reference: Path, other: Path) -> dict[str, float]:
    """CLS cosine per scan between two stores of the same scans."""
    from voxelfm.embed import EmbeddingStore

    ref, low = EmbeddingStore(reference), EmbeddingStore(other)
    out = {}
    for scan_id in ref.ids():
        a = np.asarray(ref.get(scan_id).cls, np.float64).reshape(-1)
        b = np.asarray(low.get(scan_id).cls, np.float64).reshape(-1)
        out[scan_id] = float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-300))
    return out


def compare_dtypes(cohort: Path, model_dir: Path, work: Path, dtypes: Sequence[str], *, rounds: int, threads: int,
                   workers: int, log: Callable[[str], None] = print) -> dict[str, Any]:
    """``voxelfm embed cohort --dtype d`` for each of ``dtypes``, the order rotated per round, each into
    a fresh store; per-run times, the speed ratio of each dtype to the first (the first's wall and CPU s
    over this one's, per round, median over rounds) and the CLS cosines of each dtype's last store to
    the first's."""
    runs: list[dict[str, Any]] = []
    stores: dict[str, Path] = {}
    for r in range(rounds):
        order = list(dtypes[r % len(dtypes):]) + list(dtypes[:r % len(dtypes)])
        for dtype in order:
            store = work / f"store-{dtype}-{r}"
            res = run_cli(["embed", str(cohort), "--model", str(model_dir), "--out", str(store), "--dtype", dtype,
                           "--workers", str(workers), "--no-progress"], threads)
            stores[dtype] = store
            runs.append({"round": r, "dtype": dtype, **res})
            st = res["stages"]
            log(f"round {r} {dtype}: {res['wall_s']:.1f} s wall, {res['cpu_s']:.1f} CPU s; "
                + ", ".join(f"{k} {v['wall_s']:.1f}/{v['cpu_s']:.1f}" for k, v in st.items())
                + (f"\n  {res['auto_line']}" if res["auto_line"] else ""))
    base = dtypes[0]
    ratios: dict[str, dict[str, float]] = {}
    for dtype in dtypes[1:]:
        for key in ("wall_s", "cpu_s"):
            per_round = [a[key] / b[key] for a, b in zip([x for x in runs if x["dtype"] == base],
                                                          [x for x in runs if x["dtype"] == dtype], strict=True)]
            ratios.setdefault(f"{base} / {dtype}", {})[key] = float(np.median(per_round))
    cosines = {d: cls_cosines(stores[base], stores[d]) for d in dtypes[1:]}
    return {"runs": runs, "ratios": ratios, "cls_cosine": cosines,
            "patches": _patch_counts(stores[base])}


def _patch_counts(store: Path) -> dict[str, int]:
    from voxelfm.embed import EmbeddingStore

    s = EmbeddingStore(store)
    return {scan_id: int(np.prod(s.get(scan_id).patch.shape[:-1])) for scan_id in s.ids()}


def _dtypes_main(args: argparse.Namespace, model: Any, cohort: Path, work: Path) -> None:
    import torch

    from voxelfm.models import save_model

    if args.layerscale is not None:
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith("gamma"):
                    param.fill_(args.layerscale)
    save_model(model, work / "model")
    load = os.getloadavg()
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
          flush=True)
    result = compare_dtypes(cohort, work / "model", work, args.dtypes, rounds=args.rounds, threads=args.threads,
                            workers=args.workers[0], log=lambda line: print(line, flush=True))
    patches = result["patches"]
    print(f"patches per scan: {sorted(patches.values())}")
    for pair, r in result["ratios"].items():
        print(f"{pair}: wall {r['wall_s']:.2f}x, CPU {r['cpu_s']:.2f}x (median over rounds)")
    for dtype, cos in result["cls_cosine"].items():
        print(f"CLS cosine {dtype} vs {args.dtypes[0]}: min {min(cos.values()):.6f} over {len(cos)} scans")
    load = os.getloadavg()
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, **result}, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=12, help="scans in the synthetic cohort")
    parser.add_argument("--shape", type=int, nargs=3, default=[96, 256, 256], help="z y x voxels per scan")
    parser.add_argument("--preset", default="vit-tiny")
    parser.add_argument("--max-patches", type=int, default=512)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--phantom", choices=("tiny", "small", "standard"), default=None,
                        help="cohort of voxelfm.data.phantom scans of this size instead of the simple one")
    parser.add_argument("--dtypes", nargs="+", choices=("fp32", "bf16", "fp16", "auto"), default=None,
                        help="time `voxelfm embed --dtype D` end to end for each (the first is the reference); "
                             "uses the first --workers value")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the --dtypes runs")
    parser.add_argument("--layerscale", type=float, default=None, help="set every LayerScale gamma (--dtypes)")
    args = parser.parse_args()

    from voxelfm.embed import EmbeddingStore, collect_jobs, run_embedding
    from voxelfm.models import build_model
    from voxelfm.preprocess import PreprocessSpec

    work = Path(tempfile.mkdtemp(prefix="bench_embed_"))
    try:
        start = time.perf_counter()
        cohort = work / "cohort"
        if args.phantom:
            from voxelfm.data.phantom import write_cohort as write_phantoms

            write_phantoms(cohort, args.n, seed=0, size=args.phantom)
            cohort = cohort / "images"
        else:
            write_cohort(cohort, args.n, tuple(args.shape))
        print(f"wrote {args.n} {args.phantom or tuple(args.shape)} scans in {time.perf_counter() - start:.1f} s",
              flush=True)
        spec = PreprocessSpec(max_patches=args.max_patches)
        model = build_model(args.preset, seed=0, spec=spec).eval()
        if args.dtypes:
            _dtypes_main(args, model, cohort, work)
            return
        jobs = collect_jobs([cohort])
        split = stage_times(model, [j.source for j in jobs[:2]], spec, max(args.workers))
        print(f"per scan: read+preprocess {split['preprocess_s']:.2f} s, forward {split['forward_s']:.2f} s "
              f"({split['workers']} workers could at best give {split['max_overlap_speedup']:.2f}x, "
              "with a free core per process)", flush=True)
        best: dict[int, float] = {}
        runs = []
        for r in range(args.rounds):
            order = args.workers if r % 2 == 0 else list(reversed(args.workers))
            for workers in order:
                store = work / f"store-{workers}-{r}"
                summary = run_embedding(model, jobs, EmbeddingStore(store), workers=workers)
                if summary.failed:
                    raise SystemExit(f"{summary.failed} scans failed: {summary.failures[:2]}")
                rate = summary.scans_per_minute
                runs.append({"round": r, "workers": workers, "seconds": summary.seconds, "scans_per_min": rate})
                best[workers] = max(best.get(workers, 0.0), rate)
                print(f"round {r} workers={workers}: {summary.done} scans in {summary.seconds:.1f} s "
                      f"= {rate:.1f} scans/min", flush=True)
        base = best[min(best)]
        for workers, rate in sorted(best.items()):
            print(f"best workers={workers}: {rate:.1f} scans/min ({rate / base:.2f}x vs workers={min(best)})")
        if args.json:
            args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                             "stage_times": split, "runs": runs, "best": best}, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
