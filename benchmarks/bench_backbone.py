"""Backbone speed and memory on CPU: voxelfm (SDPA) vs the original eager formulation.

For each token count, one child process builds the backbone (random seeded weights: speed does
not depend on the values), runs a warm-up forward at 512 patches, then times batch-1 fp32
forwards and reports the peak resident memory (ru_maxrss) of the process. Each measurement runs
in its own process so the peaks do not mix. The eager baseline is the independent statement of
the original formulation in ``tests/models/original_vit.py`` (full attention matrix in fp32).
Before any eager run the size of its attention matrix is checked against the memory limit; it
is never started when it cannot fit (the shared machine must not be pushed into OOM).

Also measured: the machine's fp32 matmul peak (best of several 2048² matmuls) and the achieved
FLOP/s of each forward (analytic FLOP count: 24·T·C² + 4·T²·C per block + patch embedding).

Usage::

    nice -n 10 .venv/bin/python benchmarks/bench_backbone.py                 # 512, 4096, 25000
    .venv/bin/python benchmarks/bench_backbone.py --tokens 512 4096 --json out.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GIB = 1024**3
# Patch grids (d, h, w) for each target token count (25,000 = the paper's budget, anisotropic).
GRIDS = {512: (8, 8, 8), 4096: (16, 16, 16), 25000: (25, 40, 25)}


def _grid_for(tokens: int) -> tuple[int, int, int]:
    if tokens in GRIDS:
        return GRIDS[tokens]
    side = max(1, round(tokens ** (1 / 3)))
    return (side, side, side)


def forward_flops(embed_dim: int, depth: int, n_patches: int, n_special: int, patch_size: int) -> float:
    """Multiply-adds ×2 of one forward: projections/MLP 24·T·C², attention 4·T²·C per block."""
    t = n_patches + n_special
    per_block = 24 * t * embed_dim**2 + 4 * t * t * embed_dim
    return float(depth * per_block + 2 * n_patches * patch_size**3 * embed_dim)


def attention_bytes(n_tokens: int, heads: int) -> int:
    return heads * n_tokens * n_tokens * 4


def mem_available() -> int:
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def _rss_peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _load_original():
    path = ROOT / "tests" / "models" / "original_vit.py"
    spec = importlib.util.spec_from_file_location("original_vit", path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


# -- child processes ----------------------------------------------------------------------------
def child_forward(impl: str, preset: str, tokens: int, repeats: int, max_blocks: int = 0) -> dict:
    import torch

    from voxelfm.models import build_model

    torch.manual_seed(0)
    model = build_model(preset, seed=0).eval()
    cfg = model.config
    depth = cfg.depth
    if 0 < max_blocks < depth:
        # Blocks are identical in cost and run one after another: time K of them, scale by depth/K.
        # Peak memory is unaffected (activations of one block at a time).
        model.blocks = model.blocks[:max_blocks]
    used = len(model.blocks)
    p = cfg.patch_size
    grid = _grid_for(tokens)
    x = torch.randn(1, *(n * p for n in grid))
    warm = torch.randn(1, 8 * p, 8 * p, 8 * p)
    if impl == "ours":
        def run(inp):
            return model.forward_features(inp)["cls"]
        tables = None
    else:
        original = _load_original()
        state = {k: v.detach() for k, v in model.state_dict().items()}
        tables = original.rope_tables(grid, cfg.head_dim, cfg.rope_base)  # built once, outside timing
        warm_tables = original.rope_tables((8, 8, 8), cfg.head_dim, cfg.rope_base)

        def run(inp):
            with torch.no_grad():
                t = tables if inp is x else warm_tables
                return original.original_forward(state, inp, num_heads=cfg.num_heads, rope_base=cfg.rope_base, tables=t)
    with torch.no_grad():
        run(warm)
    baseline = _rss_peak_bytes()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        with torch.no_grad():
            run(x)
        times.append(time.perf_counter() - start)
    n = math.prod(grid)
    scale = depth / used
    times = [t * scale for t in times]
    flops = forward_flops(cfg.embed_dim, cfg.depth, n, 1 + cfg.num_register_tokens, p)
    return {"impl": impl, "preset": preset, "tokens": n, "grid": list(grid), "times_s": times,
            "blocks_timed": used, "extrapolated": used != depth, "best_s": min(times), "flops": flops, "gflops_per_s": flops / min(times) / 1e9,
            "peak_rss_gib": _rss_peak_bytes() / GIB, "rss_after_warmup_gib": baseline / GIB,
            "threads": torch.get_num_threads()}


def child_matmul_peak(size: int = 2048, repeats: int = 8) -> dict:
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return {"matmul_size": size, "gflops_per_s": 2 * size**3 / best / 1e9, "threads": torch.get_num_threads()}


def _spawn(args: list[str]) -> dict:
    cmd = [sys.executable, __file__, "--child", *args]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- orchestration ------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="vit-base")
    parser.add_argument("--tokens", type=int, nargs="+", default=[512, 4096, 25000])
    parser.add_argument("--eager-at", type=int, nargs="+", default=[512, 4096, 25000],
                        help="token counts at which to (try to) run the eager original formulation")
    parser.add_argument("--repeats", type=int, default=2, help="timed forwards per measurement (1 above 1,000 tokens)")
    parser.add_argument("--memory-limit-gib", type=float, default=24.0,
                        help="the machine size the eager formulation must fit in")
    parser.add_argument("--max-blocks-at", type=int, nargs=2, metavar=("TOKENS", "K"), default=None,
                        help="at TOKENS patches time only the first K blocks and extrapolate to full depth")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        kind = args.child[0]
        result = (child_matmul_peak() if kind == "matmul" else
                  child_forward(kind, args.child[1], int(args.child[2]), int(args.child[3]), int(args.child[4])))
        print(json.dumps(result))
        return

    from voxelfm.models import PRESETS

    cfg = PRESETS[args.preset]
    results: dict = {"preset": args.preset, "machine": {"cpus": os.cpu_count(), "load_avg_start": os.getloadavg()}}
    results["matmul_peak_before"] = _spawn(["matmul"])
    print(f"fp32 matmul peak: {results['matmul_peak_before']['gflops_per_s']:.0f} GFLOP/s "
          f"({results['matmul_peak_before']['threads']} threads)", flush=True)
    rows = []
    for tokens in args.tokens:
        repeats = 1 if tokens > 1000 else args.repeats
        grid = _grid_for(tokens)
        n = math.prod(grid)
        k = args.max_blocks_at[1] if args.max_blocks_at and args.max_blocks_at[0] == tokens else 0
        ours = _spawn(["ours", args.preset, str(tokens), str(repeats), str(k)])
        rows.append(ours)
        note = f" (extrapolated from {ours['blocks_timed']} of {cfg.depth} blocks)" if ours["extrapolated"] else ""
        print(f"ours   {n:6d} patches: {ours['best_s']:8.2f} s{note}, peak RSS {ours['peak_rss_gib']:.2f} GiB, "
              f"{ours['gflops_per_s']:.0f} GFLOP/s", flush=True)
        if tokens not in args.eager_at:
            continue
        need = attention_bytes(n + 1 + cfg.num_register_tokens, cfg.num_heads)
        # softmax writes a second matrix of the same size while the scores are alive
        limit = min(args.memory_limit_gib * GIB, mem_available())
        if 2 * need > limit:
            rows.append({"impl": "eager", "tokens": n, "grid": list(grid), "skipped": True,
                         "attention_matrix_gib": need / GIB, "needs_at_least_gib": 2 * need / GIB,
                         "limit_gib": limit / GIB})
            print(f"eager  {n:6d} patches: NOT RUN — one attention matrix is {need / GIB:.1f} GiB "
                  f"(scores + softmax ≥ {2 * need / GIB:.1f} GiB) > limit {limit / GIB:.1f} GiB", flush=True)
            continue
        eager = _spawn(["eager", args.preset, str(tokens), str(repeats), str(k)])
        eager["attention_matrix_gib"] = need / GIB
        rows.append(eager)
        print(f"eager  {n:6d} patches: {eager['best_s']:8.2f} s, peak RSS {eager['peak_rss_gib']:.2f} GiB, "
              f"{eager['gflops_per_s']:.0f} GFLOP/s; ours is {eager['best_s'] / ours['best_s']:.2f}x faster",
              flush=True)
    results["matmul_peak_after"] = _spawn(["matmul"])
    peak = max(results["matmul_peak_before"]["gflops_per_s"], results["matmul_peak_after"]["gflops_per_s"])
    for row in rows:
        if "gflops_per_s" in row:
            row["fraction_of_matmul_peak"] = row["gflops_per_s"] / peak
    results["rows"] = rows
    results["machine"]["load_avg_end"] = os.getloadavg()
    print(f"fp32 matmul peak after: {results['matmul_peak_after']['gflops_per_s']:.0f} GFLOP/s; "
          f"load average {results['machine']['load_avg_start']} -> {results['machine']['load_avg_end']}")
    print("fraction of peak: " + ", ".join(f"{r['impl']}@{r['tokens']}={r['fraction_of_matmul_peak']:.2f}"
                                          for r in rows if "fraction_of_matmul_peak" in r))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
