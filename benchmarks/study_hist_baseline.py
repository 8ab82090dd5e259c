"""The HU-histogram yardstick of the recipe study: how much of the cohort's findings a 32-bin HU
histogram of each scan predicts, with scan-level folds and with patient-grouped folds (the study's
protocol). Its gain over chance (0.5) bounds what intensity alone can explain.

    python benchmarks/study_hist_baseline.py COHORT_DIR MODEL_DIR   # MODEL_DIR: any study run's
                                                                   # exported model (its preprocess.json)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    import pandas as pd
    import study_pretrain as study
    from bench_pretrain import _hu_histograms, _oof_scores, _preprocess_all

    from voxelfm.data.phantom import FINDINGS
    from voxelfm.preprocess import PreprocessSpec

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cohort", type=Path)
    parser.add_argument("model", type=Path, help="a model directory whose preprocess.json the study used")
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()

    spec = PreprocessSpec.load(args.model / "preprocess.json")
    labels = pd.read_csv(args.cohort / "labels.csv")
    histograms = _hu_histograms(_preprocess_all([args.cohort / p for p in labels["path"]], spec), spec)
    findings = [f for f in FINDINGS if 10 <= labels[f].sum() <= len(labels) - 10]
    y = labels[findings].to_numpy().astype(int)
    patients = study._patient_groups(args.cohort)
    for name, groups in (("scan-level folds", None), ("patient-grouped folds", patients)):
        scores = np.stack([_oof_scores(histograms, y[:, j], "logreg", 3, 0, groups) for j in range(len(findings))],
                          axis=1)
        chance = np.full_like(scores, 0.5)
        run = {"y": y, "pretrained|cls": scores, "random|cls": chance,
               "pretrained|cls+mean": scores, "random|cls+mean": chance}
        print(name, json.dumps(study._pooled([run], groups, 0, args.resamples)["cls"]))


if __name__ == "__main__":
    main()
