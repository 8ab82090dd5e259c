"""Probe training speed on cached features (issue 6 target: Q-Former on 1,000 scans x 512 patch
tokens trains in under a minute on 2 CPU cores).

Synthetic features with a planted finding (30% prevalence, signal in one patch token and the CLS),
70/15/15 split. Times ``run_probe`` end to end (token bank, training, validation every epoch,
test prediction, 1,000-resample bootstrap) for each head and thread count, and prints the test
AUROC so a fast-but-broken probe would show. The machine is shared: compare ratios within a run.

    .venv/bin/python benchmarks/bench_probes.py --n 1000 --grid 8 --dim 384 --epochs 10

``--seeds K`` instead checks that the probes *learn*: K independently drawn data sets at the demo's
scale (default 256 scans, 146/50/60 split as ``voxelfm demo --size small``), each probe trained
with the demo's recipe and scored once on test, and prints for each seed the test AUROC of the MLP
on CLS and the Q-Former on patch tokens (with the demo's head parameters: one query, width 64, a
linear skip from the CLS), their CPU seconds and the best validation epoch:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_probes.py --seeds 4 --n 256 --grid 8 --dim 192
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch

from voxelfm.probes import FeatureSet, run_probe


def make(n: int, grid: int, dim: int, seed: int = 0, split: tuple[float, float] = (0.7, 0.85),
         prevalence: float = 0.3) -> tuple[FeatureSet, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prevalence).astype(int)
    direction = rng.normal(size=dim).astype(np.float32)
    direction /= np.linalg.norm(direction)
    patches = rng.normal(size=(n, grid, grid, grid, dim)).astype(np.float32)
    where = rng.integers(0, grid, size=(n, 3))
    patches[np.arange(n), where[:, 0], where[:, 1], where[:, 2]] += 8.0 * direction * y[:, None]
    cls = rng.normal(size=(n, dim)).astype(np.float32) + 3.0 * direction * y[:, None]
    ids = [f"s{i:05d}" for i in range(n)]
    split = np.where(np.arange(n) < split[0] * n, "train", np.where(np.arange(n) < split[1] * n, "val", "test"))
    labels = pd.DataFrame({"scan_id": ids, "finding": y, "split": split})
    return FeatureSet(ids, cls, list(patches)), labels


#: The classification recipe of ``voxelfm demo`` (voxelfm.demo.config.DemoProbeBudget.classification_options).
def demo_recipe() -> dict:
    from voxelfm.demo.config import DemoProbeBudget

    return DemoProbeBudget(hidden_dim=128, bootstrap=200, seed=4).classification_options()


def head_params(head: str) -> dict:
    """The demo's head parameters (voxelfm.demo.config.DemoProbeBudget of the ``small`` size)."""
    from voxelfm.demo.config import get_config

    budget = get_config("small").probes
    if head == "qformer":
        return budget.qformer_head_params()
    return {"hidden_dim": budget.hidden_dim}


def learn_check(args: argparse.Namespace) -> None:
    """Per seed: test AUROC of MLP on CLS and Q-Former on patches with the demo's recipe."""
    import json

    learned = {"mlp": 0, "qformer": 0}
    at_least_mlp = 0
    extra = json.loads(args.qformer_params) if args.qformer_params else {}
    print(f"{'seed':>4s} {'head':8s} {'CPU s':>7s} {'test AUROC [95% CI]':>26s} {'best epoch':>10s}", flush=True)
    for seed in range(args.seeds):
        feats, labels = make(args.n, args.grid, args.dim, seed=seed, split=(0.57, 0.77), prevalence=args.prevalence)
        aucs = {}
        for head in ("mlp", "qformer"):
            cpu = time.process_time()
            cfg = demo_recipe()
            cfg["head_params"] = {**head_params(head), **(extra if head == "qformer" else {})}
            res = run_probe("classification", feats, labels, target="finding", head=head, config=cfg, figures=False)
            auc = res.metrics["auroc"]
            aucs[head] = auc.value
            learned[head] += int(auc.value >= 0.75)
            best = max(res.output.history, key=lambda r: r.get("val_auroc", -1.0))["epoch"]
            print(f"{seed:4d} {head:8s} {time.process_time() - cpu:7.1f} {auc.format():>26s} {best:10d}", flush=True)
        at_least_mlp += int(aucs["qformer"] >= aucs["mlp"] - 0.02)
    for head, k in learned.items():
        print(f"{head}: test AUROC >= 0.75 in {k} of {args.seeds} seeds")
    print(f"Q-Former within 0.02 of the MLP or above in {at_least_mlp} of {args.seeds} seeds")


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
    ap.add_argument("--seeds", type=int, default=0, help="learning check over this many data seeds")
    ap.add_argument("--prevalence", type=float, default=0.3)
    ap.add_argument("--qformer-params", default="", help="JSON head parameters over the demo's (learning check)")
    args = ap.parse_args()
    if args.seeds:
        learn_check(args)
        return
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
