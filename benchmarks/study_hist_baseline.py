"""The yardstick of the recipe study: how much of a cohort's findings frozen features without
pretraining can see, per finding, with patient-grouped folds (the study's protocol).

    python benchmarks/study_hist_baseline.py COHORT_DIR [--seeds 0 1 2] [--json OUT.json] [--oof pooled]

Feature sets, all from the same preprocessed scans (the `small` demo's embedding spec: the
original pipeline at 512 patches of ``vit-tiny``, or ``--model DIR``'s ``preprocess.json``):

* ``histogram``: the 32-bin HU histogram of each preprocessed scan (no learning; the demo's
  "HU histogram" row is the same idea);
* ``random sN | cls`` and ``random sN | cls+mean``: a randomly initialised ``vit-tiny`` (the
  ``cpu_small`` recipe's architecture, LayerScale 1.0, built with seed N) embedding every scan: the
  random twin every pretrained backbone is compared with.

Each feature set is probed per finding with logistic regression (3 x 5-fold StratifiedGroupKFold
by patient, out-of-fold scores as within-fold percentiles: ``study_pretrain.oof_scores``; ``--oof
pooled`` pools raw probabilities, the protocol of the figures before that fix); AUROC per finding with a 95 % CI from resampling patients, and the
macro AUROC over findings with at least ``--min-positives`` positives and negatives (with its CI).
``--scan-level`` adds the histogram with ungrouped folds (the older, leaky protocol) for contrast.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: Architecture of the cpu_small recipe's student (vit-tiny with LayerScale 1.0).
ARCH_OVERRIDES = {"layerscale": 1.0}


def _spec(model: Path | None):
    from voxelfm.models import PRESETS
    from voxelfm.preprocess import PreprocessSpec

    if model is not None:
        return PreprocessSpec.load(model / "preprocess.json")
    return PreprocessSpec(patch_size=PRESETS["vit-tiny"].patch_size, max_patches=512)  # demo_spec of `small`


def _random_model_dir(work: Path, seed: int, spec) -> Path:
    import dataclasses

    from voxelfm.models import PRESETS, build_model, save_model

    out = work / f"random_vit_tiny_s{seed}"
    if not (out / "config.json").is_file():
        config = dataclasses.replace(PRESETS["vit-tiny"], **ARCH_OVERRIDES)
        save_model(build_model(config, seed=seed, spec=spec), out, spec=spec)
    return out


def _per_finding(y: np.ndarray, scores: np.ndarray, groups: np.ndarray | None, n_resamples: int) -> dict:
    """AUROC per column and their mean, each with a 95 % CI from resampling patients."""
    from study_pretrain import _bootstrap_weights, _weighted_auroc

    weights = np.vstack([np.ones((1, len(y))), _bootstrap_weights(len(y), groups, n_resamples, 0)])
    aucs = np.stack([_weighted_auroc(y[:, j], scores[:, j], weights) for j in range(y.shape[1])])  # (F, 1 + R)

    def summary(row: np.ndarray) -> dict:
        rest = row[1:][np.isfinite(row[1:])]
        low, high = np.quantile(rest, [0.025, 0.975])
        return {"auroc": round(float(row[0]), 3), "ci95": [round(float(low), 3), round(float(high), 3)]}

    return {"per_finding": [summary(a) for a in aucs], "macro": summary(np.nanmean(aucs, axis=0))}


def main() -> None:
    import pandas as pd
    from bench_pretrain import _features, _hu_histograms, _preprocess_all
    from study_pretrain import OOF_DEFAULT, PROBES, _patient_groups, oof_scores

    from voxelfm.data.phantom import FINDINGS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cohort", type=Path)
    parser.add_argument("--model", type=Path, default=None, help="use this model directory's preprocess.json")
    parser.add_argument("--seeds", type=int, nargs="*", default=[0], help="random-init vit-tiny seeds (none: histogram only)")
    parser.add_argument("--work", type=Path, default=None, help="where the random models are saved (default: COHORT/.yardstick)")
    parser.add_argument("--min-positives", type=int, default=5)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--scan-level", action="store_true", help="also the histogram with ungrouped folds")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--oof", choices=sorted(PROBES), default=OOF_DEFAULT,
                        help="fold-rank: within-fold percentiles (default); pooled: raw probabilities (earlier figures)")
    args = parser.parse_args()

    t0 = time.perf_counter()
    spec = _spec(args.model)
    labels = pd.read_csv(args.cohort / "labels.csv")
    volumes = _preprocess_all([args.cohort / p for p in labels["path"]], spec)
    findings = [f for f in FINDINGS if args.min_positives <= labels[f].sum() <= len(labels) - args.min_positives]
    y = labels[findings].to_numpy().astype(int)
    groups = _patient_groups(args.cohort)
    features = {"histogram": _hu_histograms(volumes, spec)}
    work = args.work or args.cohort / ".yardstick"
    for seed in args.seeds:
        feats = _features(_random_model_dir(work, seed, spec), volumes)
        features[f"random s{seed} | cls"] = feats["cls"]
        features[f"random s{seed} | cls+mean"] = feats["cls+mean"]
    runs = [(name, x, groups) for name, x in features.items()]
    if args.scan_level:
        runs.append(("histogram, scan-level folds", features["histogram"], None))
    results = {}
    for name, x, grp in runs:
        scores = np.stack([oof_scores(x, y[:, j], 3, 0, grp, args.oof) for j in range(len(findings))], axis=1)
        results[name] = _per_finding(y, scores, groups, args.resamples)
        print(f"{name:32s} macro {results[name]['macro']}", flush=True)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out = {"cohort": str(args.cohort), "probe": PROBES[args.oof], "n_scans": len(labels), "n_patients": int(labels["patient_id"].nunique()),
           "findings": findings, "positives": [int(labels[f].sum()) for f in findings], "results": results,
           "wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 1)}
    # Per-finding table: AUROC with CI for each feature set.
    names = list(results)
    print("| finding | positives | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for j, f in enumerate(findings):
        cells = [f"{results[n]['per_finding'][j]['auroc']:.2f}" for n in names]
        print(f"| {f} | {out['positives'][j]} | " + " | ".join(cells) + " |")
    print("| **macro** | | " + " | ".join(
        f"**{results[n]['macro']['auroc']:.3f}** [{results[n]['macro']['ci95'][0]:.2f}, {results[n]['macro']['ci95'][1]:.2f}]"
        for n in names) + " |")
    print(f"wall {out['wall_s']} s, CPU {out['cpu_s']} s")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
