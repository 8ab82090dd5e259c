"""Recipe study: which short single-machine pretraining recipe gives frozen features that beat
the same network at its own initial weights? Several arms x seeds, pooled paired difference.

    python benchmarks/study_pretrain.py COHORT_DIR --work DIR --steps 400 --seeds 0 1 2 \
        --arms rt ema [--threads 2] [--spacing 4]
    python benchmarks/study_pretrain.py COHORT_DIR --work DIR --summary-only [--arms rt ema] [--oof pooled]
    python benchmarks/study_pretrain.py COHORT_DIR --work DIR --contrast rt_ibot:1000 rt_ibot:200

Protocol (the paired protocol of ``bench_pretrain.py cohort``): the cohort written by
``voxelfm phantom`` is cached once with ``prepare`` (the pretraining data); each run pretrains the
``cpu_small`` recipe with the arm's overrides and the seed, exports the pretrained backbone (the
student when the teacher is frozen), and rebuilds the *exact initial weights* of that run as the
random twin. Both embed every scan (same preprocessing), and a logistic-regression probe (3 x
5-fold, stratified and grouped by patient when the cohort has repeat scans, out-of-fold scores
turned into within-fold percentiles before pooling: ``oof_scores``; ``--oof pooled`` pools the raw
probabilities, the protocol of the figures before that fix) is fit per finding on each feature set. The twin's scores depend only on its weights, the
preprocessing and the probe, so they are cached under ``WORK/twins/`` by a digest of those and
shared by every arm of a seed with the same architecture. One run's figure is macro-AUROC(pretrained) - macro-AUROC(random
twin). An arm's figure pools its seeds: the mean over seeds of that difference, with a 95 % CI from
resampling scans (the same resample for every seed and both models) and a two-sided bootstrap p.

Runs are resumable: each finished run leaves ``WORK/runs/ARM_STEPS_sSEED/scores.npz`` and is
skipped next time; runs go seed-major (all arms of seed 0 first) so a cut study keeps arms
comparable. A run probed under an older protocol (``info.probe`` differs) is re-probed from its
saved model directories without retraining (the old scores are kept as ``scores_<old>.npz`` and
restored, not recomputed, when that protocol is asked for again); ``--summary-only`` does that for
every finished run, then summarises. ``--contrast A:STEPS B:STEPS`` compares two finished
(arm, steps) groups directly: pretrained(A) - pretrained(B) over the seeds both have, with the
same pooled bootstrap (e.g. a longer run against a shorter one of the same recipe).
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


#: The probe protocol of each way of pooling out-of-fold scores (``--oof``), recorded in every run's
#: ``info.probe``; a run probed otherwise is re-probed. "pooled" is the protocol of every figure
#: before the fold-rank fix (kept so those figures stay reproducible).
PROBES = {"fold-rank": "logreg-c0.1-5fold-grouped-foldrank", "pooled": "logreg-c0.1-5fold-grouped"}
OOF_DEFAULT = "fold-rank"


def oof_scores(features: np.ndarray, labels: np.ndarray, repeats: int, seed: int,
               groups: np.ndarray | None, oof: str = OOF_DEFAULT) -> np.ndarray:
    """Out-of-fold scores of a logistic-regression probe (C 0.1 on standardised features) in
    ``repeats`` x 5-fold CV (stratified, grouped by patient when ``groups`` is given), averaged
    over the repeats. The folds depend only on ``labels``, ``groups`` and ``seed``, so every model
    of a paired comparison is scored on the same folds.

    ``oof="fold-rank"`` (default) turns each fold's held-out scores into within-fold percentiles,
    ``(rank - 1/2) / n_fold`` (ties averaged), before pooling; ``oof="pooled"`` pools the raw
    probabilities (``bench_pretrain._oof_scores``, the protocol of the earlier figures).

    Why: a fold's raw probabilities carry its own intercept, i.e. its training set's class
    balance. Grouped stratified folds cannot balance every fold exactly, and a fold that holds out
    more positives trains on fewer, so without signal the pooled scores rank the held-out folds
    opposite to their prevalence and pooled AUROC falls below 0.5 (to ~0.26 for constant features
    in the synthetic test; on the study cohorts it cost macro AUROCs 0.005-0.01), which drags
    macro AUROCs toward or below chance and adds noise to paired differences. Within a fold the percentile is a monotone map of the
    score, so within-fold pairs are ranked exactly as before; only the fold-level offsets go.
    Without signal a held-out scan's within-fold rank is independent of its label, so the pooled
    AUROC is 0.5 in expectation whatever the fold balances. The cost is a small bias on cross-fold
    pairs when there is signal and the folds' prevalences differ (a positive in a fold with more
    positives gets a lower percentile); stratification keeps those differences small.
    The alternative, the mean of per-fold AUROCs, was not taken: with 10 positives a fold holds
    about 2, each per-fold AUROC is coarse (and undefined in many bootstrap resamples), and a
    patient bootstrap would need every scan's fold per repeat. Fold percentiles keep one score per
    scan, so the paired patient bootstrap (``_pooled``: the same resample for every run and both
    models, out-of-fold scores held fixed as before) is unchanged."""
    if oof == "pooled":
        from bench_pretrain import _oof_scores

        return _oof_scores(features, labels, "logreg", repeats, seed, groups)
    if oof != "fold-rank":
        raise ValueError(f"unknown out-of-fold pooling {oof!r} (expected one of {sorted(PROBES)})")
    from bench_pretrain import probe_folds
    from scipy.stats import rankdata
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    out = np.zeros(len(labels))
    for r in range(repeats):
        folds = probe_folds(groups, seed + r)  # the same folds as bench_pretrain._oof_scores ("pooled")
        for train, test in folds.split(features, labels, groups):
            probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000))
            score = probe.fit(features[train], labels[train]).decision_function(features[test])
            out[test] += (rankdata(score) - 0.5) / len(test)
    return out / repeats


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
           seed: int, oof: str) -> dict[str, np.ndarray]:
    """Out-of-fold scores ``(scans, findings)`` of each feature set of one model."""
    from bench_pretrain import _features

    feats = _features(model_dir, volumes)
    return {feature: np.stack([oof_scores(feats[feature], y[:, j], repeats, seed, groups, oof)
                               for j in range(y.shape[1])], axis=1) for feature in FEATURES}


def _one_run(cohort: Path, work: Path, index: Path | None, arm: str, seed: int, steps: int, extra: list[str],
             cache: dict, max_patches: int, repeats: int, min_positives: int, oof: str = OOF_DEFAULT) -> None:
    """Train, export and probe one run, or only re-probe it when it was trained already (its
    scores are missing or from another probe protocol); ``index=None``: never train."""
    import pandas as pd
    import torch
    from bench_pretrain import _preprocess_all

    from voxelfm.data.phantom import FINDINGS
    from voxelfm.models import build_model, load_model, save_model
    from voxelfm.preprocess import PreprocessSpec
    from voxelfm.ssl import export, pretrain, read_metrics
    from voxelfm.ssl.meta_arch import SSLMetaArch

    probe = PROBES[oof]
    run_dir = work / "runs" / f"{arm}_{steps}_s{seed}"
    out = run_dir / "scores.npz"
    old: dict | None = None
    if out.is_file():
        old = json.loads(str(np.load(out)["info"]))
        if old.get("probe") == probe:
            return
        out.replace(run_dir / f"scores_{old.get('probe', 'stratified')}.npz")
        kept = run_dir / f"scores_{probe}.npz"
        if kept.is_file():  # probed under this protocol before: restore, nothing to compute
            kept.replace(out)
            return
    trained = run_dir / "train_info.json"  # written once training, export and the twin are done
    if old is None and trained.is_file() and (run_dir / "model_random").is_dir():
        old = json.loads(trained.read_text())  # a run stopped while probing: probe only
    if old is None:  # train, export, and write the random twin
        if index is None:
            raise SystemExit(f"{run_dir}: not trained (no train_info.json and model_random); re-probing needs a trained run")
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
    scores = _probe(run_dir / "model_pretrained", cache["volumes"], y, groups, repeats, seed, oof)
    arrays.update({f"pretrained|{f}": v for f, v in scores.items()})
    twin_file = work / "twins" / f"{_digest(twin, key, max_patches, repeats, seed, probe, findings, groups is not None)}.npz"
    if twin_file.is_file():
        arrays.update({f"random|{f}": v for f, v in np.load(twin_file).items()})
    else:
        scores = _probe(run_dir / "model_random", cache["volumes"], y, groups, repeats, seed, oof)
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
            "probe": probe, "grouped_by_patient": groups is not None,
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


def _trained_runs(work: Path, arms: list[str] | None) -> list[Path]:
    """Run directories under ``WORK/runs`` (only ``arms`` when given) that finished training."""
    return [d for d in sorted((work / "runs").glob("*_*_s*"))
            if (arms is None or d.name.rsplit("_", 2)[0] in arms)
            and ((d / "scores.npz").is_file() or ((d / "train_info.json").is_file() and (d / "model_random").is_dir()))]


def summary(work: Path, arms: list[str] | None, cohort: Path, probe: str | None = None) -> None:
    """One line per (arm, steps) found under ``WORK/runs`` (only ``arms`` when given; only runs
    probed under ``probe`` when given)."""
    groups: dict[tuple[str, int], list[Path]] = {}
    for f in sorted((work / "runs").glob("*_s*/scores.npz")):
        arm, steps, _ = f.parent.name.rsplit("_", 2)
        if arms is None or arm in arms:
            groups.setdefault((arm, int(steps)), []).append(f)
    for (arm, steps), files in sorted(groups.items()):
        runs = [dict(np.load(f)) for f in files]
        infos = [json.loads(str(r["info"])) for r in runs]
        if probe is not None:  # a worker still probing under another protocol: leave its run out
            keep = [k for k, info in enumerate(infos) if info.get("probe") == probe]
            if not keep:
                continue
            runs, infos = [runs[k] for k in keep], [infos[k] for k in keep]
        groups = _patient_groups(cohort)
        per_seed = [_pooled([r], groups, 0, 0)["cls"]["difference"] for r in runs]
        print(json.dumps({"arm": arm, "seeds": [i["seed"] for i in infos], "steps": steps,
                          "n_scans": int(runs[0]["y"].shape[0]), "n_findings": int(runs[0]["y"].shape[1]),
                          "probe": sorted({i.get("probe", "stratified") for i in infos}),
                          "per_seed_cls_difference": per_seed,
                          "seconds_per_step": [i["seconds_per_step"] for i in infos],
                          "threads": [i.get("threads") for i in infos], **_pooled(runs, groups)}), flush=True)


def contrast(work: Path, a: str, b: str, cohort: Path, probe: str) -> dict:
    """Pooled difference pretrained(``a``) - pretrained(``b``) (each ``ARM:STEPS``) over the seeds
    that both groups finished under ``probe``; the same resamples as the arms' summaries. Each
    seed's two runs start from the same initial weights when the arms share an architecture, so
    this is the paired effect of the recipe change (e.g. more steps) on the probe."""
    def runs(group: str) -> dict[int, dict]:
        arm, steps = group.rsplit(":", 1)
        found = {}
        for f in sorted((work / "runs").glob(f"{arm}_{int(steps)}_s*/scores.npz")):
            run = dict(np.load(f))
            info = json.loads(str(run["info"]))
            if f.parent.name.rsplit("_", 2)[0] == arm and info.get("probe") == probe:
                found[int(info["seed"])] = run
        return found

    first, second = runs(a), runs(b)
    seeds = sorted(set(first) & set(second))
    if not seeds:
        raise SystemExit(f"{a} and {b}: no seed finished in both under probe {probe!r}")
    pairs = [{"y": first[s]["y"], **{f"pretrained|{f}": first[s][f"pretrained|{f}"] for f in FEATURES},
              **{f"random|{f}": second[s][f"pretrained|{f}"] for f in FEATURES}} for s in seeds]
    groups = _patient_groups(cohort)
    per_seed = [_pooled([p], groups, 0, 0)["cls"]["difference"] for p in pairs]
    out = {"contrast": f"{a} - {b}", "seeds": seeds, "per_seed_cls_difference": per_seed, **_pooled(pairs, groups)}
    for feature in FEATURES:  # the two sides are both pretrained here
        out[feature] = {({"pretrained": a, "random": b}.get(k, k)): v for k, v in out[feature].items()}
    print(json.dumps(out), flush=True)
    return out


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
    parser.add_argument("--oof", choices=sorted(PROBES), default=OOF_DEFAULT,
                        help="how out-of-fold scores are pooled: fold-rank (within-fold percentiles, default) "
                             "or pooled (raw probabilities: the protocol of the figures before the fix)")
    parser.add_argument("--summary-only", action="store_true",
                        help="train nothing; re-probe finished runs probed under another --oof, then summarise")
    parser.add_argument("--contrast", nargs=2, metavar="ARM:STEPS", default=None,
                        help="train nothing; pooled difference pretrained(first) - pretrained(second) over their common seeds")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.contrast:
        contrast(args.work, *args.contrast, args.cohort, PROBES[args.oof])
        return
    cache: dict = {}
    if args.summary_only:  # bring finished runs to this protocol (no training), then summarise
        for run_dir in _trained_runs(args.work, args.arms):
            arm, steps, seed = run_dir.name.rsplit("_", 2)
            _one_run(args.cohort, args.work, None, arm, int(seed[1:]), int(steps), args.set, cache,
                     args.max_patches, args.repeats, args.min_positives, args.oof)
    else:
        index = _prepare(args.cohort, args.work, args.spacing)
        jobs = (_queued(args.queue, args.work) if args.queue else
                ((arm, args.steps, seed) for seed in args.seeds for arm in args.arms or ["rt", "ema"]))
        for arm, steps, seed in jobs:
            try:
                _one_run(args.cohort, args.work, index, arm, seed, steps, args.set, cache,
                         args.max_patches, args.repeats, args.min_positives, args.oof)
            except Exception as exc:  # one failed job must not stop a worker; rerun it later (resumable)
                if not args.queue:
                    raise
                print(json.dumps({"arm": arm, "steps": steps, "seed": seed, "error": repr(exc)}), flush=True)
    summary(args.work, args.arms, args.cohort, PROBES[args.oof])


if __name__ == "__main__":
    main()
