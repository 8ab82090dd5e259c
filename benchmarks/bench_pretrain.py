"""Pretraining benchmarks (CPU): throughput, DDP scaling, and a short pretraining run whose frozen
features are compared with the same architecture at random initialisation.

    python benchmarks/bench_pretrain.py speed  [--presets vit-tiny vit-small] [--steps 4] [--recipe cpu_tiny]
    python benchmarks/bench_pretrain.py threads [--counts 1 2] [--repeats 2] [--steps 25] [--index INDEX]
                                               [--policies default passive]
    python benchmarks/bench_pretrain.py ddp    [--steps 4]
    python benchmarks/bench_pretrain.py cohort COHORT_DIR --work DIR [--minutes 12]

``speed`` and ``ddp`` use synthetic HU volumes; ``cohort`` uses a cohort written by
``voxelfm phantom`` (labels.csv + images). All figures are printed; the machine is shared and
noisy, so compare figures measured in the same run only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _synthetic_index(folder: Path, n: int = 8) -> Path:
    sys.path.insert(0, str(REPO / "tests" / "ssl"))
    from synthetic import make_prepared

    return make_prepared(folder, n=n, shape=(64, 72, 72))


def _recipe_overrides(index: Path, preset: str, steps: int, batch: int) -> list[str]:
    return [
        f"datasets.0.index_path={index}", f"student.arch={preset}", f"train.max_steps={steps}",
        f"train.batch_size_per_gpu={batch}", "monitor.progress=false", "monitor.tensorboard=false",
        "checkpointing.period=100000", "train.device=cpu",
    ]


def _timed_steps(config: dict, run_dir: Path, warmup: int) -> tuple[float, int, float, float]:
    """Seconds per optimizer step after ``warmup`` steps (median), the global batch, CPU seconds per
    step after the warm-up (mean) and the last step's total loss."""
    from voxelfm.ssl.data import build_data
    from voxelfm.ssl.trainer import Trainer

    trainer = Trainer(config, run_dir)
    builder = build_data(config, world_size=trainer.world)
    times, cpu, loss = [], [], float("nan")
    for step in range(trainer.total_steps):
        batches = [builder.build(step, a * trainer.world + trainer.rank) for a in range(trainer.accum)]
        t0, c0 = time.perf_counter(), time.process_time()
        loss = float(trainer.train_step(step, batches).get("total_loss", float("nan")))
        if trainer.world > 1:
            import torch.distributed as dist

            dist.barrier()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    global_batch = int(config["train"]["batch_size_per_gpu"]) * trainer.accum * trainer.world
    return float(np.median(times[warmup:])), global_batch, float(np.mean(cpu[warmup:])), loss


def bench_speed(presets: list[str], steps: int, batch: int, recipe: str = "cpu_tiny", index: Path | None = None) -> None:
    import torch

    from voxelfm.ssl.config import load_config, packaged_config

    with tempfile.TemporaryDirectory() as tmp:
        index = index or _synthetic_index(Path(tmp) / "data")
        print(f"torch threads: {torch.get_num_threads()}; recipe {recipe}, batch {batch}, fp32; "
              f"median of {steps - 1} steps after 1 warm-up")
        for preset in presets:
            config = load_config(packaged_config(recipe), _recipe_overrides(index, preset, steps, batch))
            seconds, global_batch, cpu, loss = _timed_steps(config, Path(tmp) / preset, warmup=1)
            print(json.dumps({"preset": preset, "threads": torch.get_num_threads(), "seconds_per_step": round(seconds, 3),
                              "cpu_seconds_per_step": round(cpu, 3), "steps_per_second": round(1 / seconds, 3),
                              "volumes_per_second": round(global_batch / seconds, 2), "last_loss": loss}))


#: OpenMP wait policies to compare, as environment variables: how a thread waits at a barrier
#: (libgomp, torch's OpenMP, spins ~300,000 times by default before it sleeps).
WAIT_POLICIES: dict[str, dict[str, str]] = {"default": {}, "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
                                            "active": {"OMP_WAIT_POLICY": "ACTIVE"},
                                            "short-spin": {"GOMP_SPINCOUNT": "10000"}}


def bench_threads(counts: list[int], repeats: int, steps: int, index: Path | None, policies: list[str]) -> None:
    """The demo's recipe (cpu_small, vit-tiny, batch 16) at each torch thread count and OpenMP wait
    policy, each in a fresh process (the policy is read when torch loads OpenMP), all variants
    alternated ``repeats`` times: the same-run comparison behind the demo's ``PretrainConfig.threads``
    and the CLI's wait policy. Idle-machine figures need an otherwise idle machine."""
    with tempfile.TemporaryDirectory() as tmp:
        index = index or _synthetic_index(Path(tmp) / "data", n=16)
        for rep in range(repeats):
            for policy in policies:
                env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
                env.update(WAIT_POLICIES[policy])
                for n in counts:
                    out = subprocess.run([sys.executable, __file__, "--threads", str(n), "speed", "--recipe",
                                          "cpu_small", "--presets", "vit-tiny", "--steps", str(steps), "--index",
                                          str(index)], check=True, capture_output=True, text=True, env=env).stdout
                    print(json.dumps({"repeat": rep, "wait_policy": policy, **json.loads(out.strip().splitlines()[-1])}),
                          flush=True)


def _ddp_worker(index: str, steps: int, batch: int, out: str) -> None:
    from voxelfm.ssl.config import load_config, packaged_config
    from voxelfm.ssl.trainer import finish_distributed

    config = load_config(packaged_config("cpu_tiny"), _recipe_overrides(Path(index), "vit-tiny", steps, batch))
    seconds, global_batch, _, _ = _timed_steps(config, Path(out).parent / f"run{os.environ.get('WORLD_SIZE', '1')}", warmup=1)
    if int(os.environ.get("RANK", "0")) == 0:
        Path(out).write_text(json.dumps({"seconds_per_step": seconds, "global_batch": global_batch}))
    finish_distributed(0)


def bench_ddp(steps: int, batch: int) -> None:
    """Per-rank batch fixed: 2 ranks process twice the volumes per step (weak scaling)."""
    with tempfile.TemporaryDirectory() as tmp:
        index = _synthetic_index(Path(tmp) / "data")
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        results = {}
        for world in (1, 2):
            out = Path(tmp) / f"ddp{world}.json"
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}",
                   __file__, "_ddp_worker", str(index), str(steps), str(batch), str(out)]
            subprocess.run(cmd, check=True, env=env, capture_output=True)
            results[world] = json.loads(out.read_text())
            r = results[world]
            print(json.dumps({"processes": world, "threads_per_process": 1, "seconds_per_step": round(r["seconds_per_step"], 3),
                              "volumes_per_second": round(r["global_batch"] / r["seconds_per_step"], 2)}))
        speedup = (results[2]["global_batch"] / results[2]["seconds_per_step"]) / (results[1]["global_batch"] / results[1]["seconds_per_step"])
        print(json.dumps({"ddp_2_vs_1_throughput_ratio": round(speedup, 2)}))


# -- cohort: pretrain, then probe frozen features ----------------------------------------------
FEATURE_SETS = ("cls", "mean", "cls+mean")


def _preprocess_all(images: list[Path], spec) -> list:
    """Each scan read and preprocessed once; both backbones and the histogram baseline reuse it."""
    from voxelfm.io import load_ct
    from voxelfm.preprocess import preprocess

    return [preprocess(load_ct(p), spec) for p in images]


def _features(model_dir: Path, volumes: list) -> dict[str, np.ndarray]:
    """Per scan: the CLS token, the mean of the patch tokens, and both concatenated (DINOv2's
    linear-evaluation input)."""
    from voxelfm.embed import extract_features
    from voxelfm.models import load_model

    model = load_model(model_dir, device="cpu")
    cls, mean = [], []
    for volume in volumes:
        feats = extract_features(model, volume)
        cls.append(feats.cls)
        mean.append(feats.patch.reshape(-1, feats.patch.shape[-1]).mean(0))
    cls_arr, mean_arr = np.stack(cls), np.stack(mean)
    return {"cls": cls_arr, "mean": mean_arr, "cls+mean": np.concatenate([cls_arr, mean_arr], axis=1)}


def _hu_histograms(volumes: list, spec) -> np.ndarray:
    """A no-learning baseline: 32-bin HU histogram of each preprocessed scan."""
    edges = np.linspace(spec.hu_min, spec.hu_max, 33)
    return np.stack([np.histogram(v.hu, bins=edges)[0] for v in volumes]).astype(float)


PROBES = ("logreg", "knn")


def probe_folds(groups: np.ndarray | None, seed: int):
    """The 5-fold splitter of one repeat: stratified, and grouped (a patient's scans in one fold)
    when ``groups`` is given. Shared with ``study_pretrain.oof_scores`` so both protocols use the
    same folds."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    if groups is None:
        return StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    return StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=seed)


def _oof_scores(features: np.ndarray, labels: np.ndarray, probe: str, repeats: int, seed: int,
                groups: np.ndarray | None = None) -> np.ndarray:
    """Out-of-fold probabilities of a probe on standardised features, averaged over ``repeats``
    differently shuffled stratified 5-fold splits (averaging removes most of the split noise).
    ``groups`` (e.g. patient ids): a patient's scans stay in one fold (StratifiedGroupKFold), so a
    repeat scan cannot leak its patient's label into the training folds."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = LogisticRegression(C=0.1, max_iter=3000) if probe == "logreg" else KNeighborsClassifier(n_neighbors=10, metric="cosine")
    out = np.zeros(len(labels))
    for r in range(repeats):
        out += cross_val_predict(make_pipeline(StandardScaler(), clf), features, labels, groups=groups,
                                 cv=probe_folds(groups, seed + r),
                                 method="predict_proba")[:, 1]
    return out / repeats


def _macro_auroc(y: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Mean AUROC over the columns (findings) of ``y``; a resample without both classes in a
    column leaves that column out."""
    from voxelfm.metrics.classification import auroc

    aucs = [auroc(y[:, j], scores[:, j]) for j in range(y.shape[1]) if 0 < y[:, j].sum() < len(y)]
    return {"macro_auroc": float(np.mean(aucs)) if aucs else float("nan")}


def bench_cohort(cohort: Path, work: Path, minutes: float, spacing: float, max_patches: int, seed: int,
                 extra: list[str], min_positives: int = 10, repeats: int = 3) -> None:
    import pandas as pd

    from voxelfm.data.phantom import FINDINGS
    from voxelfm.models import build_model, save_model
    from voxelfm.ssl import (
        export,
        load_config,
        packaged_config,
        prepare_volumes,
        pretrain,
        read_metrics,
    )
    from voxelfm.ssl.prepare import PrepareSettings
    from voxelfm.ssl.trainer import Trainer

    work.mkdir(parents=True, exist_ok=True)
    labels = pd.read_csv(cohort / "labels.csv")
    t0 = time.perf_counter()
    counts = prepare_volumes([cohort / p for p in labels["path"]], work / "prepared", settings=PrepareSettings(spacing_mm=spacing))
    print(json.dumps({"prepare": counts, "seconds": round(time.perf_counter() - t0, 1)}))
    overrides = [f"datasets.0.index_path={work / 'prepared' / 'index.csv'}", f"train.max_minutes={minutes}",
                 f"train.seed={seed}", "monitor.progress=false", *extra]
    config = load_config(packaged_config("cpu_tiny"), overrides)
    # The random twin: the exact initial weights of this run's teacher (same seed, same code path).
    init = Trainer(config, work / "unused").model.teacher["backbone"]
    random_model = build_model(init.config)
    random_model.load_state_dict(init.state_dict())
    t0 = time.perf_counter()
    run = pretrain(config, out_dir=work / "run")
    train_seconds = time.perf_counter() - t0
    metrics = read_metrics(run)
    last = metrics[-1]
    print(json.dumps({"pretrain_seconds": round(train_seconds, 1), "steps": last["step"],
                      "final_total_loss": round(last["total_loss"], 4),
                      "first_total_loss": round(metrics[0]["total_loss"], 4),
                      "teacher_cls_effective_rank": round(last["teacher_cls_effective_rank"], 2),
                      "collapse_warnings": sum(1 for m in metrics if m.get("collapse_warning"))}))
    from voxelfm.preprocess import PreprocessSpec

    pre_dir = export(run, work / "model_pretrained", max_patches=max_patches)
    spec = PreprocessSpec.load(pre_dir / "preprocess.json")
    save_model(random_model, work / "model_random", spec=spec)
    volumes = _preprocess_all([cohort / p for p in labels["path"]], spec)
    feats = {name: _features(work / f"model_{name}", volumes) for name in ("pretrained", "random")}
    histograms = _hu_histograms(volumes, spec)
    from voxelfm.metrics.bootstrap import paired_bootstrap
    from voxelfm.metrics.classification import auroc

    findings = [f for f in FINDINGS if min_positives <= labels[f].sum() <= len(labels) - min_positives]
    if not findings:
        print(json.dumps({"n_scans": len(labels), "n_findings": 0, "note": f"no finding has >= {min_positives} positives and negatives"}))
        return
    y = labels[findings].to_numpy().astype(int)
    # Repeat scans of one patient stay in one fold.
    groups = labels["patient_id"].to_numpy() if "patient_id" in labels and labels["patient_id"].duplicated().any() else None
    scores = {}  # (model, feature set, probe) -> (scans, findings) out-of-fold scores
    for name, sets in {**feats, "hu_histogram": {"hist32": histograms}}.items():
        for feature, x in sets.items():
            for probe in PROBES if name != "hu_histogram" else ("logreg",):
                scores[name, feature, probe] = np.stack(
                    [_oof_scores(x, y[:, j], probe, repeats, seed, groups) for j in range(len(findings))], axis=1)
    for j, finding in enumerate(findings):
        row = {"finding": finding, "positives": int(y[:, j].sum())}
        row.update({"_".join(k): round(auroc(y[:, j], v[:, j]), 3) for k, v in scores.items()})
        print(json.dumps(row))
    summary = {"n_scans": len(labels), "n_findings": len(findings), "cv_repeats": repeats,
               "hu_histogram_logreg": round(_macro_auroc(y, scores["hu_histogram", "hist32", "logreg"])["macro_auroc"], 3)}
    print(json.dumps(summary))
    # Pretrained minus random twin, resampling scans (the same scans for both): 95 % CI and p-value.
    for feature in FEATURE_SETS:
        for probe in PROBES:
            diff = paired_bootstrap(_macro_auroc, [y, scores["pretrained", feature, probe]], [y, scores["random", feature, probe]],
                                    n_resamples=1000, seed=seed)["macro_auroc"]
            print(json.dumps({"features": feature, "probe": probe, "pretrained": round(diff.value_a, 3),
                              "random": round(diff.value_b, 3), "difference": round(diff.value, 3),
                              "ci95": [round(diff.ci_low, 3), round(diff.ci_high, 3)], "p": round(diff.p_value, 3)}))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_ddp_worker":
        _ddp_worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    # (--threads is a top-level option: put it before the mode)
    speed = sub.add_parser("speed")
    speed.add_argument("--presets", nargs="+", default=["vit-tiny", "vit-small"])
    speed.add_argument("--steps", type=int, default=4)
    speed.add_argument("--batch", type=int, default=16)
    speed.add_argument("--recipe", default="cpu_tiny", help="packaged voxelfm.ssl recipe")
    speed.add_argument("--index", type=Path, default=None, help="a prepared index.csv (default: synthetic volumes)")
    threads = sub.add_parser("threads")
    threads.add_argument("--counts", nargs="+", type=int, default=[1, 2])
    threads.add_argument("--repeats", type=int, default=2)
    threads.add_argument("--steps", type=int, default=25)
    threads.add_argument("--index", type=Path, default=None, help="a prepared index.csv (default: synthetic volumes)")
    threads.add_argument("--policies", nargs="+", choices=sorted(WAIT_POLICIES), default=["default"],
                         help="OpenMP wait policies (OMP_WAIT_POLICY, GOMP_SPINCOUNT) to compare")
    ddp = sub.add_parser("ddp")
    ddp.add_argument("--steps", type=int, default=4)
    ddp.add_argument("--batch", type=int, default=8)
    cohort = sub.add_parser("cohort")
    cohort.add_argument("cohort", type=Path)
    cohort.add_argument("--work", type=Path, required=True)
    cohort.add_argument("--minutes", type=float, default=12.0)
    cohort.add_argument("--spacing", type=float, default=4.0, help="isotropic spacing of the prepared cache (mm)")
    cohort.add_argument("--max-patches", type=int, default=216, help="token budget when embedding")
    cohort.add_argument("--seed", type=int, default=0)
    cohort.add_argument("--min-positives", type=int, default=10, help="probe findings with at least this many positives and negatives")
    cohort.add_argument("--repeats", type=int, default=3, help="5-fold CV repeats averaged per probe")
    cohort.add_argument("--set", nargs="*", default=[], help="extra key=value overrides of the cpu_tiny recipe")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.mode == "speed":
        bench_speed(args.presets, args.steps, args.batch, args.recipe, args.index)
    elif args.mode == "threads":
        bench_threads(args.counts, args.repeats, args.steps, args.index, args.policies)
    elif args.mode == "ddp":
        bench_ddp(args.steps, args.batch)
    else:
        bench_cohort(args.cohort, args.work, args.minutes, args.spacing, args.max_patches, args.seed, args.set,
                     args.min_positives, args.repeats)


if __name__ == "__main__":
    main()
