"""Recipe study: which short single-machine pretraining recipe gives frozen features that beat
the same network at its own initial weights? Several arms x seeds, pooled paired difference.

    python benchmarks/study_pretrain.py COHORT_DIR --work DIR --steps 400 --seeds 0 1 2 \
        --arms rt ema [--threads 2] [--spacing 4]
    python benchmarks/study_pretrain.py COHORT_DIR --work DIR --summary-only [--arms rt ema]

Protocol (the paired protocol of ``bench_pretrain.py cohort``): the cohort written by
``voxelfm phantom`` is cached once with ``prepare`` (the pretraining data); each run pretrains the
``cpu_small`` recipe with the arm's overrides and the seed, exports the pretrained backbone (the
student when the teacher is frozen), and rebuilds the *exact initial weights* of that run as the
random twin. Both embed every scan (same preprocessing), and a logistic-regression probe (3 x
5-fold, stratified and grouped by patient when the cohort has repeat scans, out-of-fold scores) is
fit per finding on each feature set. The twin's scores depend only on its weights, the
preprocessing and the probe, so they are cached under ``WORK/twins/`` by a digest of those and
shared by every arm of a seed with the same architecture. One run's figure is macro-AUROC(pretrained) - macro-AUROC(random
twin). An arm's figure pools its seeds: the mean over seeds of that difference, with a 95 % CI from
resampling scans (the same resample for every seed and both models) and a two-sided bootstrap p.

Runs are resumable: each finished run leaves ``WORK/runs/ARM_STEPS_sSEED/scores.npz`` and is
skipped next time; runs go seed-major (all arms of seed 0 first) so a cut study keeps arms
comparable. A run probed under an older protocol (``info.probe`` differs) is re-probed from its
saved model directories without retraining (the old scores are kept as ``scores_<old>.npz``).
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

_EMA = ["schedules.momentum.start=0.996", "schedules.momentum.peak=0.996", "schedules.momentum.end=1.0"]
# The study's base: cpu_small as it was when the study began (iBOT off). The shipped cpu_small is
# the winning arm, rt_ibot, so BASE pins iBOT off to keep every arm's meaning fixed.
BASE = ["ibot.loss_weight=0.0"]
# Arms: overrides of BASE (frozen random teacher, same view, lr 5e-4, no iBOT, ...).
ARMS: dict[str, list[str]] = {
    "rt": [],  # frozen random teacher (momentum 1), same view, DINO only
    "ema": _EMA,  # EMA teacher, momentum 0.996 -> 1 (cosine)
    "rt_cross": ["dino.teacher_view=cross"],  # frozen random teacher, cross-view (invariance) task
    "ema_cross": ["dino.teacher_view=cross", *_EMA],
    "rt_local": ["crops.local_crops_number=2"],
    "rt_lr1e3": ["schedules.lr.peak=1.0e-03"],  # the review's positive trend used Adam ~1e-3
    "rt_ibot": ["ibot.loss_weight=1.0"],  # + masked patches vs the teacher's patch tokens: the shipped cpu_small
    "ema_ibot": ["ibot.loss_weight=1.0", *_EMA],
    "rt_lr2e3": ["schedules.lr.peak=2.0e-03"],
    "ema_lr1e3": ["schedules.lr.peak=1.0e-03", *_EMA],
    "rt_lr1e3_ibot": ["schedules.lr.peak=1.0e-03", "ibot.loss_weight=1.0"],
    "rt_lr1e3_local": ["schedules.lr.peak=1.0e-03", "crops.local_crops_number=2"],
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
                 "checkpointing.period=100000", *BASE, *ARMS[arm], *extra]
    return load_config("cpu_small", overrides)


PROBE = "logreg-c0.1-5fold-grouped"  # the probe protocol; a run probed otherwise is re-probed


def _digest(model, *parts: object) -> str:
    """Digest of a backbone's weights and the settings its probe scores depend on."""
    import hashlib

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    for part in parts:
        h.update(repr(part).encode())
    return h.hexdigest()[:20]


def _probe(model_dir: Path, volumes: list, y: np.ndarray, groups: np.ndarray | None, repeats: int,
           seed: int) -> dict[str, np.ndarray]:
    """Out-of-fold scores ``(scans, findings)`` of each feature set of one model."""
    from bench_pretrain import _features, _oof_scores

    feats = _features(model_dir, volumes)
    return {feature: np.stack([_oof_scores(feats[feature], y[:, j], "logreg", repeats, seed, groups)
                               for j in range(y.shape[1])], axis=1) for feature in FEATURES}


def _one_run(cohort: Path, work: Path, index: Path, arm: str, seed: int, steps: int, extra: list[str],
             cache: dict, max_patches: int, repeats: int, min_positives: int) -> None:
    import pandas as pd
    import torch
    from bench_pretrain import _preprocess_all

    from voxelfm.data.phantom import FINDINGS
    from voxelfm.models import build_model, load_model, save_model
    from voxelfm.preprocess import PreprocessSpec
    from voxelfm.ssl import export, pretrain, read_metrics
    from voxelfm.ssl.meta_arch import SSLMetaArch

    run_dir = work / "runs" / f"{arm}_{steps}_s{seed}"
    out = run_dir / "scores.npz"
    old: dict | None = None
    if out.is_file():
        old = json.loads(str(np.load(out)["info"]))
        if old.get("probe") == PROBE:
            return
        out.replace(run_dir / f"scores_{old.get('probe', 'stratified')}.npz")
    trained = run_dir / "train_info.json"  # written once training, export and the twin are done
    if old is None and trained.is_file() and (run_dir / "model_random").is_dir():
        old = json.loads(trained.read_text())  # a run stopped while probing: probe only
    if old is None:  # train, export, and write the random twin
        config = _config(index, arm, seed, steps, extra)
        # The random twin: the exact initial weights of this run (the Trainer seeds the same way).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            init = SSLMetaArch(config).teacher["backbone"]
        twin = build_model(init.config)
        twin.load_state_dict(init.state_dict())
        t0 = time.perf_counter()
        pretrain(config, out_dir=run_dir / "train")
        seconds = time.perf_counter() - t0
        model_dir = export(run_dir / "train", run_dir / "model_pretrained", max_patches=max_patches)
        spec = PreprocessSpec.load(model_dir / "preprocess.json")
        save_model(twin, run_dir / "model_random", spec=spec)
        steps_done = int(read_metrics(run_dir / "train")[-1]["step"])
        trained.write_text(json.dumps({"train_seconds": round(seconds, 1), "steps": steps_done,
                                       "threads": torch.get_num_threads()}))
    else:  # re-probe the saved models
        seconds = float(old["train_seconds"])
        spec = PreprocessSpec.load(run_dir / "model_pretrained" / "preprocess.json")
        twin = load_model(run_dir / "model_random", device="cpu")
    metrics = read_metrics(run_dir / "train")
    labels = pd.read_csv(cohort / "labels.csv")
    key = repr(spec)
    if cache.get("key") != key:  # every arm shares the preprocessing; read the scans once
        cache["key"], cache["volumes"] = key, _preprocess_all([cohort / p for p in labels["path"]], spec)
    findings = [f for f in FINDINGS if min_positives <= labels[f].sum() <= len(labels) - min_positives]
    y = labels[findings].to_numpy().astype(int)
    # Repeat scans of one patient stay in one fold.
    groups = _patient_groups(cohort)
    arrays = {"y": y, "findings": np.array(findings)}
    t1 = time.perf_counter()
    scores = _probe(run_dir / "model_pretrained", cache["volumes"], y, groups, repeats, seed)
    arrays.update({f"pretrained|{f}": v for f, v in scores.items()})
    twin_file = work / "twins" / f"{_digest(twin, key, max_patches, repeats, seed, PROBE, findings, groups is not None)}.npz"
    if twin_file.is_file():
        arrays.update({f"random|{f}": v for f, v in np.load(twin_file).items()})
    else:
        scores = _probe(run_dir / "model_random", cache["volumes"], y, groups, repeats, seed)
        arrays.update({f"random|{f}": v for f, v in scores.items()})
        twin_file.parent.mkdir(parents=True, exist_ok=True)
        np.savez(twin_file.with_suffix(".tmp.npz"), **scores)
        twin_file.with_suffix(".tmp.npz").replace(twin_file)
    last = metrics[-1]
    info = {"arm": arm, "seed": seed, "steps": int(last["step"]),
            "train_seconds": round(seconds, 1), "seconds_per_step": round(seconds / max(1, steps), 3),
            "threads": torch.get_num_threads() if old is None else old.get("threads"),
            "first_loss": round(metrics[0]["total_loss"], 4), "last_loss": round(last["total_loss"], 4),
            "teacher_entropy": round(last.get("teacher_entropy", float("nan")), 3),
            "teacher_entropy_max": round(last.get("teacher_entropy_max", float("nan")), 3),
            "student_head_cosine": round(last.get("student_head_cosine", float("nan")), 3),
            "probe": PROBE, "grouped_by_patient": groups is not None,
            "probe_seconds": round(time.perf_counter() - t1, 1),
            "monitor_warnings": sum(1 for m in metrics if m.get("warnings") or m.get("collapse_warning"))}
    arrays["info"] = np.array(json.dumps(info))
    np.savez(out.with_suffix(".tmp.npz"), **arrays)
    out.with_suffix(".tmp.npz").replace(out)
    print(json.dumps(info), flush=True)
    print(json.dumps({"arm": arm, "seed": seed, **_pooled([dict(np.load(out))], groups, seed)}), flush=True)


def _bootstrap_weights(n: int, groups: np.ndarray | None, n_resamples: int, seed: int) -> np.ndarray:
    """``(n_resamples, n)`` multiplicity of each scan in each bootstrap resample. With ``groups``
    (patient ids) whole patients are resampled (all of a patient's scans together), since repeat
    scans of one patient are not independent test units."""
    rng = np.random.default_rng(seed)
    if groups is None:
        units, n_units = np.arange(n), n
    else:
        _, units = np.unique(groups, return_inverse=True)
        n_units = int(units.max()) + 1
    picks = rng.integers(0, n_units, size=(n_resamples, n_units))
    counts = np.zeros((n_resamples, n_units))
    np.add.at(counts, (np.arange(n_resamples)[:, None], picks), 1.0)
    return counts[:, units]


def _weighted_auroc(y: np.ndarray, score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC of ``score`` for binary ``y`` under each row of scan multiplicities ``weights``
    (Mann-Whitney, ties count 1/2: the AUROC of the resampled arrays); NaN without both classes."""
    pos, neg = score[y == 1], score[y == 0]
    pairs = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    wp, wn = weights[:, y == 1], weights[:, y == 0]
    num = np.einsum("rp,pn,rn->r", wp, pairs, wn)
    den = wp.sum(1) * wn.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _pooled(runs: list[dict], groups: np.ndarray | None, seed: int = 0, n_resamples: int = 2000) -> dict:
    """Mean over runs of the paired macro-AUROC difference (pretrained - random twin), with a 95 %
    percentile CI and a two-sided bootstrap p from resampling patients (the same resample for every
    run and both models)."""
    y = runs[0]["y"]
    for r in runs:
        if not np.array_equal(r["y"], y):
            raise ValueError("runs were probed on different labels")
    n = y.shape[0]
    weights = np.vstack([np.ones((1, n)), _bootstrap_weights(n, groups, n_resamples, seed)])  # row 0: the point estimate

    def pooled_macro(key: str) -> np.ndarray:  # (1 + n_resamples,)
        per_run = [np.nanmean(np.stack([_weighted_auroc(y[:, j], r[key][:, j], weights) for j in range(y.shape[1])]), axis=0)
                   for r in runs]
        return np.mean(per_run, axis=0)

    out = {}
    for feature in FEATURES:
        a, b = pooled_macro(f"pretrained|{feature}"), pooled_macro(f"random|{feature}")
        d = (a - b)[1:]
        d = d[np.isfinite(d)]
        low, high = np.quantile(d, [0.025, 0.975]) if d.size else (np.nan, np.nan)
        p = min(1.0, 2.0 * min(np.mean(d <= 0.0), np.mean(d >= 0.0))) if d.size else np.nan
        out[feature] = {"pretrained": round(float(a[0]), 3), "random": round(float(b[0]), 3),
                        "difference": round(float(a[0] - b[0]), 3), "ci95": [round(float(low), 3), round(float(high), 3)],
                        "p": round(float(p), 3)}
    return out


def _patient_groups(cohort: Path) -> np.ndarray | None:
    """The cohort's patient ids when some patient has several scans, else None."""
    import pandas as pd

    labels = pd.read_csv(cohort / "labels.csv")
    return labels["patient_id"].to_numpy() if "patient_id" in labels and labels["patient_id"].duplicated().any() else None


def summary(work: Path, arms: list[str] | None, cohort: Path) -> None:
    """One line per (arm, steps) found under ``WORK/runs`` (only ``arms`` when given)."""
    groups: dict[tuple[str, int], list[Path]] = {}
    for f in sorted((work / "runs").glob("*_s*/scores.npz")):
        arm, steps, _ = f.parent.name.rsplit("_", 2)
        if arms is None or arm in arms:
            groups.setdefault((arm, int(steps)), []).append(f)
    for (arm, steps), files in sorted(groups.items()):
        runs = [dict(np.load(f)) for f in files]
        infos = [json.loads(str(r["info"])) for r in runs]
        groups = _patient_groups(cohort)
        per_seed = [_pooled([r], groups, 0, 0)["cls"]["difference"] for r in runs]
        print(json.dumps({"arm": arm, "seeds": [i["seed"] for i in infos], "steps": steps,
                          "n_scans": int(runs[0]["y"].shape[0]), "n_findings": int(runs[0]["y"].shape[1]),
                          "probe": sorted({i.get("probe", "stratified") for i in infos}),
                          "per_seed_cls_difference": per_seed,
                          "seconds_per_step": [i["seconds_per_step"] for i in infos],
                          "threads": [i.get("threads") for i in infos], **_pooled(runs, groups)}), flush=True)


def _queued(queue: Path, work: Path):
    """Jobs ``ARM STEPS SEED`` (one a line; ``#`` comments) from a queue file that may grow while
    workers run; each job is claimed once across workers (an exclusive directory under
    ``WORK/claims``). Stops when no unclaimed job is left."""
    while True:
        for line in queue.read_text().splitlines():
            parts = line.split("#")[0].split()
            if len(parts) != 3:
                continue
            arm, steps, seed = parts[0], int(parts[1]), int(parts[2])
            if arm not in ARMS:
                raise SystemExit(f"{queue}: unknown arm {arm!r}")
            try:
                (work / "claims" / f"{arm}_{steps}_s{seed}").mkdir(parents=True)
            except FileExistsError:
                continue
            yield arm, steps, seed
            break
        else:
            return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cohort", type=Path)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--arms", nargs="+", default=None, choices=sorted(ARMS), help="default: rt ema (summary: all)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--spacing", type=float, default=4.0)
    parser.add_argument("--max-patches", type=int, default=216)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--min-positives", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--set", nargs="*", default=[], help="extra key=value overrides for every arm")
    parser.add_argument("--queue", type=Path, default=None,
                        help="run jobs 'ARM STEPS SEED' claimed from this file (several workers may share it)")
    parser.add_argument("--summary-only", action="store_true")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    if not args.summary_only:
        index = _prepare(args.cohort, args.work, args.spacing)
        cache: dict = {}
        jobs = (_queued(args.queue, args.work) if args.queue else
                ((arm, args.steps, seed) for seed in args.seeds for arm in args.arms or ["rt", "ema"]))
        for arm, steps, seed in jobs:
            try:
                _one_run(args.cohort, args.work, index, arm, seed, steps, args.set, cache,
                         args.max_patches, args.repeats, args.min_positives)
            except Exception as exc:  # one failed job must not stop a worker; rerun it later (resumable)
                if not args.queue:
                    raise
                print(json.dumps({"arm": arm, "steps": steps, "seed": seed, "error": repr(exc)}), flush=True)
    summary(args.work, args.arms, args.cohort)


if __name__ == "__main__":
    main()
