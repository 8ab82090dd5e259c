"""Probe training speed on cached features (issue 6 target: Q-Former on 1,000 scans x 512 patch
tokens trains in under a minute on 2 CPU cores).

Synthetic features with a planted finding (30% prevalence, signal in one patch token and the CLS),
70/15/15 split. Times ``run_probe`` end to end (token bank, training, validation every epoch,
test prediction, 1,000-resample bootstrap) for each head and thread count, and prints the test
AUROC so a fast-but-broken probe would show. The machine is shared: compare ratios within a run.

    .venv/bin/python benchmarks/bench_probes.py --n 1000 --grid 8 --dim 384 --epochs 10
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch

from voxelfm.probes import FeatureSet, run_probe


def make(n: int, grid: int, dim: int, seed: int = 0) -> tuple[FeatureSet, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    direction = rng.normal(size=dim).astype(np.float32)
    direction /= np.linalg.norm(direction)
    patches = rng.normal(size=(n, grid, grid, grid, dim)).astype(np.float32)
    where = rng.integers(0, grid, size=(n, 3))
    patches[np.arange(n), where[:, 0], where[:, 1], where[:, 2]] += 8.0 * direction * y[:, None]
    cls = rng.normal(size=(n, dim)).astype(np.float32) + 3.0 * direction * y[:, None]
    ids = [f"s{i:05d}" for i in range(n)]
    split = np.where(np.arange(n) < 0.7 * n, "train", np.where(np.arange(n) < 0.85 * n, "val", "test"))
    labels = pd.DataFrame({"scan_id": ids, "finding": y, "split": split})
    return FeatureSet(ids, cls, list(patches)), labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--grid", type=int, default=8, help="patch grid side (tokens = grid^3)")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--hidden", type=int, nargs="+", default=[256, 128], help="Q-Former widths")
    ap.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    ap.add_argument("--queries", type=int, default=None, help="Q-Former queries (default: the head's default)")
    ap.add_argument("--bootstrap", type=int, default=1000)
    args = ap.parse_args()
    t0 = time.perf_counter()
    feats, labels = make(args.n, args.grid, args.dim)
    print(f"data: {args.n} scans x {args.grid ** 3} tokens x {args.dim} dims "
          f"({feats.patches[0].nbytes * args.n / 2**20:.0f} MiB), made in {time.perf_counter() - t0:.1f} s; "
          f"torch {torch.__version__}, default threads {torch.get_num_threads()}", flush=True)
    run_probe("classification", feats.subset(feats.ids[::4]), labels, target="finding", head="mlp",
              config={"bootstrap": 10, "train": {"epochs": 1}})  # warm-up: imports, allocator
    cases = [("qformer", h, t) for h in args.hidden for t in args.threads] + [("mlp", 1024, t) for t in args.threads]
    # Wall time depends on how busy the machine is; process CPU time does much less so (with one
    # thread it is close to the wall time on an idle machine). Both are printed.
    print(f"{'head':8s} {'width':>6s} {'threads':>7s} {'wall s':>7s} {'CPU s':>7s} {'test AUROC [95% CI]':>26s}",
          flush=True)
    for head, hidden, threads in cases:
        cfg = {"bootstrap": args.bootstrap, "train": {"epochs": args.epochs, "threads": threads},
               "head_params": {"hidden_dim": hidden}}
        if head == "qformer" and args.queries:
            cfg["head_params"]["num_queries"] = args.queries
        start, cpu = time.perf_counter(), time.process_time()
        res = run_probe("classification", feats, labels, target="finding", head=head, config=cfg, figures=False)
        sec, cpu = time.perf_counter() - start, time.process_time() - cpu
        print(f"{head:8s} {hidden:6d} {threads:7d} {sec:7.1f} {cpu:7.1f} {res.metrics['auroc'].format():>26s}",
              flush=True)


if __name__ == "__main__":
    main()
