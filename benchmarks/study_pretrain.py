"""Recipe study: which short single-machine pretraining recipe gives frozen features that beat
the same network at its own initial weights? Several arms x seeds, pooled paired difference.

    python benchmarks/study_pretrain.py COHORT_DIR --work DIR --steps 400 --seeds 0 1 2 \
        --arms rt ema [--threads 2] [--spacing 4]
    python benchmarks/study_pretrain.py COHORT_DIR --work DIR --summary-only --arms rt ema

Protocol (the paired protocol of ``bench_pretrain.py cohort``): the cohort written by
``voxelfm phantom`` is cached once with ``prepare`` (the pretraining data); each run pretrains the
``cpu_small`` recipe with the arm's overrides and the seed, exports the teacher backbone, and
rebuilds the *exact initial weights* of that run as the random twin. Both embed every scan (same
preprocessing), and a logistic-regression probe (3 x stratified 5-fold, out-of-fold scores) is fit
per finding on each feature set. One run's figure is macro-AUROC(pretrained) - macro-AUROC(random
twin). An arm's figure pools its seeds: the mean over seeds of that difference, with a 95 % CI from
resampling scans (the same resample for every seed and both models) and a two-sided bootstrap p.

Runs are resumable: each finished run leaves ``WORK/runs/ARM_sSEED/scores.npz`` and is skipped
next time; runs go seed-major (all arms of seed 0 first) so a cut study keeps arms comparable.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

# Arms: overrides of the cpu_small recipe (frozen random teacher, same view, lr 5e-4, ...).
ARMS: dict[str, list[str]] = {
    "rt": [],  # cpu_small as shipped: frozen random teacher (momentum 1), same view
    "ema": ["schedules.momentum.start=0.996", "schedules.momentum.peak=0.996", "schedules.momentum.end=1.0"],
    "rt_cross": ["dino.teacher_view=cross"],  # frozen random teacher, cross-view (invariance) task
    "ema_cross": ["dino.teacher_view=cross", "schedules.momentum.start=0.996", "schedules.momentum.peak=0.996",
                  "schedules.momentum.end=1.0"],
    "rt_local": ["crops.local_crops_number=2"],
}
FEATURES = ("cls", "cls+mean")


def _prepare(cohort: Path, work: Path, spacing: float) -> Path:
    import pandas as pd

    from voxelfm.ssl import prepare_volumes
    from voxelfm.ssl.prepare import PrepareSettings

    index = work / "prepared" / "index.csv"
    if not index.is_file():
        labels = pd.read_csv(cohort / "labels.csv")
        t0 = time.perf_counter()
        counts = prepare_volumes([cohort / p for p in labels["path"]], work / "prepared", settings=PrepareSettings(spacing_mm=spacing))
        print(json.dumps({"prepare": counts, "seconds": round(time.perf_counter() - t0, 1)}), flush=True)
    return index


def _config(index: Path, arm: str, seed: int, steps: int, extra: list[str]) -> dict:
    from voxelfm.ssl import load_config

    overrides = [f"datasets.0.index_path={index}", f"train.seed={seed}", f"train.max_steps={steps}",
                 "train.device=cpu", "monitor.progress=false", "monitor.tensorboard=false",
                 "checkpointing.period=100000", *ARMS[arm], *extra]
    return load_config("cpu_small", overrides)


def _one_run(cohort: Path, work: Path, index: Path, arm: str, seed: int, steps: int, extra: list[str],
             cache: dict, max_patches: int, repeats: int, min_positives: int) -> None:
    import pandas as pd
    from bench_pretrain import _features, _oof_scores, _preprocess_all

    from voxelfm.data.phantom import FINDINGS
    from voxelfm.models import build_model, save_model
    from voxelfm.preprocess import PreprocessSpec
    from voxelfm.ssl import export, pretrain, read_metrics
    from voxelfm.ssl.meta_arch import SSLMetaArch

    run_dir = work / "runs" / f"{arm}_s{seed}"
    out = run_dir / "scores.npz"
    if out.is_file():
        return
    config = _config(index, arm, seed, steps, extra)
    # The random twin: the exact initial weights of this run (the Trainer seeds the same way).
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        init = SSLMetaArch(config).teacher["backbone"]
    twin = build_model(init.config)
    twin.load_state_dict(init.state_dict())
    t0 = time.perf_counter()
    pretrain(config, out_dir=run_dir / "train")
    seconds = time.perf_counter() - t0
    metrics = read_metrics(run_dir / "train")
    model_dir = export(run_dir / "train", run_dir / "model_pretrained", max_patches=max_patches)
    spec = PreprocessSpec.load(model_dir / "preprocess.json")
    save_model(twin, run_dir / "model_random", spec=spec)
    labels = pd.read_csv(cohort / "labels.csv")
    key = repr(spec)
    if cache.get("key") != key:  # every arm shares the preprocessing; read the scans once
        cache["key"], cache["volumes"] = key, _preprocess_all([cohort / p for p in labels["path"]], spec)
    findings = [f for f in FINDINGS if min_positives <= labels[f].sum() <= len(labels) - min_positives]
    y = labels[findings].to_numpy().astype(int)
    arrays = {"y": y, "findings": np.array(findings)}
    t1 = time.perf_counter()
    for name in ("pretrained", "random"):
        feats = _features(run_dir / f"model_{name}", cache["volumes"])
        for feature in FEATURES:
            arrays[f"{name}|{feature}"] = np.stack(
                [_oof_scores(feats[feature], y[:, j], "logreg", repeats, seed) for j in range(len(findings))], axis=1)
    last = metrics[-1]
    info = {"arm": arm, "seed": seed, "steps": int(last["step"]), "train_seconds": round(seconds, 1),
            "seconds_per_step": round(seconds / max(1, steps), 3),
            "first_loss": round(metrics[0]["total_loss"], 4), "last_loss": round(last["total_loss"], 4),
            "teacher_entropy": round(last.get("teacher_entropy", float("nan")), 3),
            "teacher_entropy_max": round(last.get("teacher_entropy_max", float("nan")), 3),
            "probe_seconds": round(time.perf_counter() - t1, 1),
            "monitor_warnings": sum(1 for m in metrics if m.get("warnings") or m.get("collapse_warning"))}
    arrays["info"] = np.array(json.dumps(info))
    np.savez(out.with_suffix(".tmp.npz"), **arrays)
    out.with_suffix(".tmp.npz").replace(out)
    print(json.dumps(info), flush=True)
    print(json.dumps({"arm": arm, "seed": seed, **_pooled([dict(np.load(out))], seed)}), flush=True)


def _pooled(runs: list[dict], seed: int = 0, n_resamples: int = 2000) -> dict:
    """Mean over runs of the paired macro-AUROC difference, CI by resampling scans."""
    from voxelfm.metrics.bootstrap import paired_bootstrap
    from voxelfm.metrics.classification import auroc

    y = runs[0]["y"]
    for r in runs:
        if not np.array_equal(r["y"], y):
            raise ValueError("runs were probed on different labels")

    def macro_mean(y_, scores):  # scores: (scans, findings, runs)
        vals = []
        for k in range(scores.shape[2]):
            aucs = [auroc(y_[:, j], scores[:, j, k]) for j in range(y_.shape[1]) if 0 < y_[:, j].sum() < len(y_)]
            vals.append(np.mean(aucs))
        return {"macro_auroc": float(np.mean(vals))}

    out = {}
    for feature in FEATURES:
        a = np.stack([r[f"pretrained|{feature}"] for r in runs], axis=2)
        b = np.stack([r[f"random|{feature}"] for r in runs], axis=2)
        d = paired_bootstrap(macro_mean, [y, a], [y, b], n_resamples=n_resamples, seed=seed)["macro_auroc"]
        out[feature] = {"pretrained": round(d.value_a, 3), "random": round(d.value_b, 3), "difference": round(d.value, 3),
                        "ci95": [round(d.ci_low, 3), round(d.ci_high, 3)], "p": round(d.p_value, 3)}
    return out


def summary(work: Path, arms: list[str]) -> None:
    for arm in arms:
        files = sorted((work / "runs").glob(f"{arm}_s*/scores.npz"))
        if not files:
            continue
        runs = [dict(np.load(f)) for f in files]
        infos = [json.loads(str(r["info"])) for r in runs]
        per_seed = [_pooled([r], 0, 1000)["cls"]["difference"] for r in runs]
        print(json.dumps({"arm": arm, "seeds": [i["seed"] for i in infos], "steps": infos[0]["steps"],
                          "n_scans": int(runs[0]["y"].shape[0]), "n_findings": int(runs[0]["y"].shape[1]),
                          "per_seed_cls_difference": per_seed,
                          "seconds_per_step": [i["seconds_per_step"] for i in infos], **_pooled(runs)}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cohort", type=Path)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--arms", nargs="+", default=["rt", "ema"], choices=sorted(ARMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--spacing", type=float, default=4.0)
    parser.add_argument("--max-patches", type=int, default=216)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--min-positives", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--set", nargs="*", default=[], help="extra key=value overrides for every arm")
    parser.add_argument("--summary-only", action="store_true")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    if not args.summary_only:
        index = _prepare(args.cohort, args.work, args.spacing)
        cache: dict = {}
        for seed in args.seeds:
            for arm in args.arms:
                _one_run(args.cohort, args.work, index, arm, seed, args.steps, args.set, cache,
                         args.max_patches, args.repeats, args.min_positives)
    summary(args.work, args.arms)


if __name__ == "__main__":
    main()
