"""Report generation on the synthetic cohort: train projector (+ LoRA), generate, score findings.

Prints macro F1 of findings extracted from generated reports vs the majority-class baseline
(with bootstrap CIs), BLEU / ROUGE-L, training time, seconds per report and peak memory.

Feature sources (pick one):
  --store S                  an EmbeddingStore (e.g. from `voxelfm embed`)
  --backbone DIR|PRESET      compute features here with a model directory (pretrained) or a
                             random-init preset such as vit-tiny (cached in --work/store)
  --synthetic N              deterministic synthetic features + templated reports (no cohort)

Example (what benchmarks/README.md records):
  nice -n 10 .venv/bin/python benchmarks/bench_report.py --cohort /tmp/phantom \
      --backbone vit-tiny --lm smollm2 --minutes 15 --work /tmp/bench_report
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import time
from pathlib import Path

import numpy as np


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synthetic(n: int, seed: int = 0):
    from voxelfm.report.dataset import ReportRecord

    sentences = {"lung_nodule": "Small nodule in the right upper lobe.",
                 "pleural_effusion": "Right pleural effusion.",
                 "emphysema": "Centrilobular emphysema.", "cardiomegaly": "Cardiomegaly."}
    names = list(sentences)
    rng = np.random.default_rng(seed)
    protos = rng.normal(size=(len(names), 64))
    feats, recs = {}, []
    for i in range(n):
        present = rng.random(len(names)) < 0.35
        patch = rng.normal(size=(4, 4, 4, 64)).astype(np.float32)
        for k in np.flatnonzero(present):
            patch[k % 4] += 1.5 * protos[k]
        sid = f"syn{i:04d}"
        feats[sid] = (patch.mean(axis=(0, 1, 2)), patch)
        text = " ".join(sentences[names[k]] for k in np.flatnonzero(present)) or \
            "No relevant abnormal findings identified in the current examination."
        split = "train" if i < 0.7 * n else ("val" if i < 0.8 * n else "test")
        recs.append(ReportRecord(sid, split, text))
    return feats, recs, names


def features_with_backbone(cohort: Path, backbone: str, store_dir: Path, ids: list[str],
                           max_patches: int):
    """Embed the cohort's scans with a model dir or a random-init preset into a store (cached)."""
    import pandas as pd
    import torch

    from voxelfm.embed.extract import extract_features
    from voxelfm.embed.store import EmbeddingStore
    from voxelfm.models import build_model, load_model

    store = EmbeddingStore(store_dir)
    todo = [s for s in ids if s not in store]
    if todo:
        if Path(backbone).is_dir():
            model = load_model(backbone)
        else:
            from voxelfm.models import resolve_config
            from voxelfm.preprocess.spec import PreprocessSpec

            # The original preprocessing, with a CPU-sized patch budget.
            spec = PreprocessSpec(patch_size=resolve_config(backbone).patch_size,
                                  max_patches=max_patches)
            model = build_model(backbone, seed=0, spec=spec)
        model.eval()
        labels = pd.read_csv(cohort / "labels.csv").set_index("scan_id")
        torch.set_num_threads(2)
        for k, scan_id in enumerate(todo):
            t0 = time.perf_counter()
            feats = extract_features(model, cohort / labels.loc[scan_id, "path"])
            store.write(scan_id, feats, cohort / labels.loc[scan_id, "path"],
                        time.perf_counter() - t0)
            if k % 10 == 0:
                print(f"  embedded {k + 1}/{len(todo)} ({time.perf_counter() - t0:.1f} s/scan, "
                      f"grid {feats.grid_shape}, C={feats.cls.shape[0]})", flush=True)
    from voxelfm.report.dataset import features_from_store

    return features_from_store(store_dir, ids)


def extractor_agreement(cohort: Path, records, vocab, field: str) -> dict:
    """Macro F1 of the rule-based extractor on the reference texts vs the cohort's true labels."""
    import pandas as pd

    from voxelfm.report.evaluate import finding_metrics, label_matrix
    from voxelfm.report.findings import RuleBasedExtractor

    labels = pd.read_csv(cohort / "labels.csv").set_index("scan_id")
    ids = [r.scan_id for r in records if r.scan_id in labels.index]
    truth = labels.loc[ids, vocab.names].to_numpy().astype(bool)
    extractor = RuleBasedExtractor(vocab)
    out = {}
    for name in dict.fromkeys([field, "report"]):
        pred = label_matrix([r.text(name) for r in records if r.scan_id in labels.index], extractor)
        m = finding_metrics(truth, pred, vocab.names, n_bootstrap=0)
        out[name] = {"macro_f1": round(m["macro"]["f1"], 4),
                     "errors": int((truth != pred).sum()), "labels": int(truth.size)}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cohort", type=Path, help="phantom cohort directory (reports.jsonl, labels.csv)")
    ap.add_argument("--store", type=Path)
    ap.add_argument("--backbone", help="model directory or random-init preset (vit-tiny, ...)")
    ap.add_argument("--max-patches", type=int, default=1000,
                    help="patch budget when embedding with a random-init preset")
    ap.add_argument("--synthetic", type=int, default=0)
    ap.add_argument("--lm", default="smollm2", help="smollm2 | tiny | a local LM directory")
    ap.add_argument("--minutes", type=float, default=15.0, help="training budget (both stages)")
    ap.add_argument("--stage1-share", type=float, default=0.25)
    ap.add_argument("--stage2-epochs", type=float, default=30.0)
    ap.add_argument("--stage1-epochs", type=float, default=10.0)
    ap.add_argument("--queries", type=int, default=32)
    ap.add_argument("--stage1-lr", type=float, default=1e-3)
    ap.add_argument("--stage2-lr", type=float, default=3e-4)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--gen-batch", type=int, default=4)
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_report"))
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads; 1 is ~3x faster than 2 on an oversubscribed machine")
    ap.add_argument("--text-field", default="impression",
                    help="report field to learn: impression (abnormal findings only, like the "
                         "paper's restructured reports) or report (full text)")
    ap.add_argument("--system-prompt", default="You are a radiology assistant.")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)

    from voxelfm.report.dataset import load_reports
    from voxelfm.report.evaluate import evaluate_run
    from voxelfm.report.findings import FindingVocabulary
    from voxelfm.report.generate import generate_reports, write_generated
    from voxelfm.report.train import ReportTrainConfig, train_report_model

    args.work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    if args.synthetic:
        features, records, vocab_names = synthetic(args.synthetic)
        source = f"synthetic features ({args.synthetic} scans)"
    else:
        if args.cohort is None:
            ap.error("--cohort is required unless --synthetic")
        records = load_reports(args.cohort / "reports.jsonl")
        ids = [r.scan_id for r in records]
        if args.store is not None:
            from voxelfm.report.dataset import features_from_store

            features = features_from_store(args.store, ids)
            source = f"store {args.store}"
        elif args.backbone:
            features = features_with_backbone(args.cohort, args.backbone, args.work / "store", ids,
                                              args.max_patches)
            source = f"backbone {args.backbone}"
        else:
            ap.error("give --store, --backbone or --synthetic")
        from voxelfm.data.phantom import FINDINGS

        vocab_names = list(FINDINGS)
    t_features = time.perf_counter() - t_start
    counts = {s: sum(r.split == s for r in records) for s in ("train", "val", "test")}
    cls0, patch0 = next(iter(features.values()))
    print(f"features: {source}; {len(features)} scans, grid {patch0.shape[:3]}, C={cls0.shape[0]}; "
          f"splits {counts}; {t_features:.0f} s", flush=True)

    cfg = ReportTrainConfig(
        num_queries=args.queries, batch_size=args.batch_size,
        stage1_epochs=args.stage1_epochs, stage2_epochs=args.stage2_epochs,
        stage1_lr=args.stage1_lr, stage2_lr=args.stage2_lr,
        stage1_minutes=args.minutes * args.stage1_share,
        stage2_minutes=args.minutes * (1 - args.stage1_share), log_every=1,
        text_field="report" if args.synthetic else args.text_field,
        system_prompt=args.system_prompt,
    )
    run_dir = args.work / f"run_{Path(args.lm).name}"
    t0 = time.perf_counter()
    run = train_report_model(features, records, lm=args.lm, out_dir=run_dir, config=cfg)
    t_train = time.perf_counter() - t0
    rss_train = _rss_mib()
    eval_ids = [r.scan_id for r in records if r.split == "test"]
    t0 = time.perf_counter()
    rows = generate_reports(run, features, eval_ids, batch_size=args.gen_batch)
    t_gen = time.perf_counter() - t0
    write_generated(run, rows)
    vocab = FindingVocabulary.ct_rate().subset(vocab_names)
    metrics = evaluate_run(run, vocabulary=vocab, n_bootstrap=args.bootstrap)
    summary = json.loads((run / "training.json").read_text())
    macro, base = metrics["findings"]["macro"], metrics["baseline_majority"]["macro"]
    result = {
        "features": source, "lm": args.lm, "splits": counts,
        "train_seconds": round(t_train, 1),
        "stages": [{k: s[k] for k in ("name", "steps", "planned_steps", "seconds", "val_loss_before",
                                      "val_loss_after", "stopped_by_budget", "trainable_parameters")}
                   for s in summary["stages"]],
        "n_test": len(rows), "seconds_per_report": round(t_gen / max(1, len(rows)), 2),
        "macro_f1": macro["f1"], "macro_f1_ci": macro["f1_ci"], "n_findings": macro["n_findings"],
        "macro_precision": macro["precision"], "macro_recall": macro["recall"],
        "baseline_macro_f1": base["f1"], "baseline_macro_f1_ci": base["f1_ci"],
        "chance_macro_f1": metrics["baseline_prevalence"]["macro"]["f1"],
        "bleu": metrics["text"]["bleu"], "rouge_l": metrics["text"]["rouge_l"],
        "peak_rss_mib_after_train": round(rss_train, 0), "peak_rss_mib": round(_rss_mib(), 0),
        "per_finding_f1": {k: round(v["f1"], 3) for k, v in metrics["findings"]["per_finding"].items()
                           if v["support"] > 0},
    }
    if not args.synthetic and (args.cohort / "labels.csv").is_file():
        result["extractor_vs_ground_truth"] = extractor_agreement(args.cohort, records, vocab,
                                                                  cfg.text_field)
    (args.work / "bench_report.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    for r in rows[:3]:
        print(f"--- {r['scan_id']}\nGEN: {r['generated']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
