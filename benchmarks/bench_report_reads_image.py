"""Does the demo's report model read the image? Its report generation on a finished demo's features,
with the projector's standardisation and summary token (``ours``) or the paper's layout (``paper``).

For each feature source, layout and seed: the demo's ``reportgen`` settings of that size, then the
number of distinct reports, macro finding F1 beside the every-finding and prevalence-chance baselines,
the mean F1 on the findings the demo's probes detect against chance at the same naming rate, and the
own-vs-shuffled image loss (``voxelfm.report.evaluate.image_reliance``). CPU seconds per run.

Example (what benchmarks/README.md records; DEMO from `voxelfm demo --size small --out DEMO`):
  nice -n 5 .venv/bin/python benchmarks/bench_report_reads_image.py --demo DEMO \
      --sources histogram pretrained random --layouts ours paper --seeds 4
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def run_one(demo: Path, size: str, source: str, layout_name: str, seed: int, work: Path) -> dict:
    import torch

    from voxelfm.demo import layout
    from voxelfm.demo.config import get_config
    from voxelfm.demo.stages.reportgen import finding_extractor, probe_detected, read_reports
    from voxelfm.probes.data import FeatureSet
    from voxelfm.report.evaluate import detected_findings_f1
    from voxelfm.report.model import DecodingConfig
    from voxelfm.report.run import run_report_generation
    from voxelfm.report.train import ReportTrainConfig

    torch.set_num_threads(1)  # as each demo report item
    cfg = get_config(size).reportgen
    reports, _, test_ids = read_reports(demo, cfg)
    features = FeatureSet.from_store(layout.store_dir(demo, source), patches=True, name=f"{source}-3d")
    ours = layout_name == "ours"
    train_cfg = ReportTrainConfig(
        stage1_epochs=cfg.stage1_epochs, stage2_epochs=cfg.stage2_epochs, text_field=cfg.text_field, max_val_examples=8,
        seed=seed, num_queries=cfg.num_queries, standardize_features=ours, summary_token=ours,
        **({"stage2_lr": cfg.stage2_lr} if cfg.stage2_lr is not None else {}))
    cpu0 = time.process_time()
    run = run_report_generation(features, reports, test_ids, out_dir=work / f"{source}-{layout_name}-{seed}",
                                config=train_cfg, lm=None if cfg.lm == "auto" else cfg.lm,
                                decoding=DecodingConfig(max_new_tokens=cfg.max_new_tokens), extractor=finding_extractor(),
                                n_bootstrap=200, seed=seed)
    m = run.metrics
    return {"source": source, "layout": layout_name, "seed": seed, "cpu_s": time.process_time() - cpu0,
            "distinct": m["reports"]["distinct"], "n": m["reports"]["n"], "f1": m["findings"]["macro"]["f1"],
            "every": m["baseline_every_finding"]["macro"]["f1"], "chance": m["baseline_prevalence"]["macro"]["f1"],
            "detected": detected_findings_f1(m, probe_detected(demo, source)),
            "reliance": m["image_reliance"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo", type=Path, required=True, help="a finished `voxelfm demo` output directory")
    ap.add_argument("--size", default="small", help="the demo size it was run with")
    ap.add_argument("--sources", nargs="+", default=["histogram", "pretrained", "random"])
    ap.add_argument("--layouts", nargs="+", default=["ours", "paper"], choices=["ours", "paper"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[4])
    ap.add_argument("--work", type=Path, default=None, help="where the runs go (default: a temporary directory)")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="reads_image_"))
    print("source | layout | seed | distinct | macro F1 | every-finding | chance | detected F1 vs chance (findings) "
          "| loss own / shuffled, own better | CPU-s")
    for source in args.sources:
        for layout_name in args.layouts:
            for seed in args.seeds:
                r = run_one(args.demo, args.size, source, layout_name, seed, work)
                d, rel = r["detected"], r["reliance"]
                det = f"{d['f1']:.3f} vs {d['chance_f1']:.3f} ({', '.join(d['findings'])})" if d else "-"
                print(f"{source} | {layout_name} | {seed} | {r['distinct']}/{r['n']} | {r['f1']:.3f} | {r['every']:.3f} | "
                      f"{r['chance']:.3f} | {det} | {rel['own']:.4f} / {rel['shuffled']:.4f}, {rel['own_better']:.0%} | "
                      f"{r['cpu_s']:.0f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
