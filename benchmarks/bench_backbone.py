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
import contextlib
import importlib.util
import json
import math
import os
import resource
import statistics
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


def build_original(repo: Path, ours):
    """The ORIGINAL VoxelFM ``DinoVisionTransformer``, imported from the checkout ``repo`` at run time (a
    checkout of github rmaguado/VoxelFM; nothing of it is copied here), built with ``ours``'s config and
    loaded with its weights. Returns the model and what did not match in the state dicts."""
    sys.path.insert(0, str(Path(repo).resolve()))
    from dinov2.models.vision_transformer import DinoVisionTransformer  # the original's code

    cfg = ours.config
    orig = DinoVisionTransformer(
        patch_size=cfg.patch_size, embed_dim=cfg.embed_dim, depth=cfg.depth, num_heads=cfg.num_heads,
        mlp_ratio=cfg.mlp_ratio, init_values=cfg.layerscale, rope_base=cfg.rope_base,
        rope_rescale_coords=None, ffn_layer=cfg.ffn_layer, qkv_bias=cfg.qkv_bias, proj_bias=cfg.proj_bias,
        ffn_bias=cfg.ffn_bias, num_register_tokens=cfg.num_register_tokens).eval()
    state = dict(ours.state_dict())
    missing, unexpected = orig.load_state_dict(state, strict=False)
    # the original's extra entries (if any) are buffers it computes itself; every tensor of ours must land in it
    load = {"missing_in_ours": sorted(missing), "unexpected": sorted(unexpected),
            "ours_not_in_original": sorted(set(state) - set(orig.state_dict()))}
    assert not unexpected and not load["ours_not_in_original"], load
    return orig, load


def _cosines(a, b) -> tuple[float, float]:
    """(min CLS cosine, mean per-patch cosine) of ``a`` against ``b``, each a (cls, patch) pair."""
    import torch.nn.functional as F

    return (float(F.cosine_similarity(a[0].double(), b[0].double(), dim=-1).min()),
            float(F.cosine_similarity(a[1].double(), b[1].double(), dim=-1).mean()))


def matmul_cpu_peak(threads: int, size: int = 2048, repeats: int = 6) -> dict:
    """Best fp32 and bf16 ``size``² matmul rate in GFLOP per CPU second (the same clock as the forwards)."""
    import torch

    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
        torch.mm(a, b)
        best = math.inf
        for _ in range(repeats):
            c0 = time.process_time()
            torch.mm(a, b)
            best = min(best, time.process_time() - c0)
        out[f"{name}_gflop_per_cpu_s"] = 2 * size**3 / best / 1e9
    return out


def compare_original_repo(repo: Path, preset: str, token_counts: list[int], repeats: int, threads: int,
                          dtypes: tuple[str, ...] = ("fp32",), matmul_size: int = 2048,
                          layerscale: float | None = None) -> dict:
    """Side by side with the ORIGINAL VoxelFM code (see :func:`build_original`), same weights: outputs are
    compared, then batch-1 forwards are timed in CPU seconds (``time.process_time``), ours and the
    original in each of ``dtypes`` (``fp32``; ``bf16`` = both under CPU bf16 autocast), the order rotated
    per repeat, all in this one process. The original's dependency einops must be importable."""
    import torch

    from voxelfm.models import build_model

    torch.set_num_threads(threads)
    ours = build_model(preset, seed=0).eval()
    cfg = ours.config
    if layerscale is not None:
        # At the 1e-5 init the blocks barely move the tokens, so output agreement (bf16 vs fp32) would
        # say little; a larger LayerScale makes every block count (speed does not depend on values).
        with torch.no_grad():
            for name, param in ours.named_parameters():
                if name.endswith("gamma"):
                    param.fill_(layerscale)
    orig, load = build_original(repo, ours)
    p = cfg.patch_size
    results: dict = {"preset": preset, "threads": torch.get_num_threads(), "original_repo": str(repo),
                     "dtypes": list(dtypes), "layerscale": layerscale, "state_dict": load, "rows": []}

    def run(name: str, dtype: str, inp):
        if name == "ours":  # the inference entry point that embedding uses
            out = ours.forward_features(inp, autocast_dtype=torch.bfloat16 if dtype == "bf16" else None)
            return out["cls"], out["patch"].reshape(inp.shape[0], -1, cfg.embed_dim)
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()
        with torch.no_grad(), ctx:
            out = orig(inp)
        return out["x_norm_clstoken"].float(), out["x_norm_patchtokens"].float()

    variants = [(name, dtype) for dtype in dtypes for name in ("ours", "original")]
    warm = torch.randn(1, 8 * p, 8 * p, 8 * p, generator=torch.Generator().manual_seed(1))
    for name, dtype in variants:
        run(name, dtype, warm)
    results["matmul_peak_before"] = matmul_cpu_peak(threads, matmul_size)
    for tokens in token_counts:
        grid = _grid_for(tokens)
        x = torch.randn(1, *(n * p for n in grid), generator=torch.Generator().manual_seed(tokens))
        times: dict[str, list[float]] = {f"{n} {d}": [] for n, d in variants}
        outs: dict = {}
        for rep in range(repeats):
            shift = rep % len(variants)
            for name, dtype in variants[shift:] + variants[:shift]:
                c0 = time.process_time()
                out = run(name, dtype, x)
                times[f"{name} {dtype}"].append(time.process_time() - c0)
                outs.setdefault(f"{name} {dtype}", out)
            print(f"{math.prod(grid):6d} patches, repeat {rep}: "
                  + ", ".join(f"{k} {v[-1]:.2f}" for k, v in times.items()) + " CPU-s", flush=True)
        (oc, op), (gc, gp) = outs["ours fp32"], outs["original fp32"]
        diff = {"cls_max_abs": float((oc - gc).abs().max()), "patch_max_abs": float((op - gp).abs().max()),
                "cls_cosine": _cosines(outs["ours fp32"], outs["original fp32"])[0]}
        if "bf16" in dtypes:
            diff["ours_bf16_vs_fp32_cls_cosine"], diff["ours_bf16_vs_fp32_patch_cosine"] = _cosines(
                outs["ours bf16"], outs["ours fp32"])
            diff["original_bf16_vs_fp32_cls_cosine"], diff["original_bf16_vs_fp32_patch_cosine"] = _cosines(
                outs["original bf16"], outs["original fp32"])
        ratios = {f"original {d} / ours {d}": [o / u for o, u in zip(times[f"original {d}"], times[f"ours {d}"],
                                                                      strict=True)] for d in dtypes}
        if "bf16" in dtypes:
            ratios["original fp32 / ours bf16"] = [o / u for o, u in zip(times["original fp32"], times["ours bf16"],
                                                                         strict=True)]
            ratios["ours fp32 / ours bf16"] = [o / u for o, u in zip(times["ours fp32"], times["ours bf16"],
                                                                     strict=True)]
        flops = forward_flops(cfg.embed_dim, cfg.depth, math.prod(grid), 1 + cfg.num_register_tokens, p)
        row = {"tokens": math.prod(grid), "grid": list(grid), "flops": flops, "cpu_s": times,
               "gflop_per_cpu_s": {k: flops / min(v) / 1e9 for k, v in times.items()},
               "ratios": ratios, "ratio_medians": {k: statistics.median(v) for k, v in ratios.items()},
               "outputs": diff}
        print(f"{row['tokens']:6d} patches: outputs {json.dumps(diff)}", flush=True)
        for k, v in ratios.items():
            print(f"{row['tokens']:6d} patches: {k} = {[round(r, 2) for r in v]} (median {statistics.median(v):.2f})",
                  flush=True)
        print(f"{row['tokens']:6d} patches: GFLOP per CPU-s (best) "
              + ", ".join(f"{k} {v:.1f}" for k, v in row["gflop_per_cpu_s"].items()), flush=True)
        results["rows"].append(row)
    results["matmul_peak_after"] = matmul_cpu_peak(threads, matmul_size)
    print(f"matmul peak GFLOP per CPU-s: before {results['matmul_peak_before']}, after {results['matmul_peak_after']}",
          flush=True)
    return results


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
    parser.add_argument("--original-repo", type=Path, default=None,
                        help="a checkout of the original VoxelFM code (github rmaguado/VoxelFM): compare against its "
                             "own ViT, imported from there at run time, same weights, CPU seconds interleaved per repeat")
    parser.add_argument("--threads", type=int, default=0, help="torch threads for --original-repo (0: torch's default)")
    parser.add_argument("--layerscale", type=float, default=None,
                        help="for --original-repo: set every LayerScale gamma to this (both models), so that "
                             "output agreement measures every block (default: the 1e-5 init)")
    parser.add_argument("--dtypes", nargs="+", choices=("fp32", "bf16"), default=["fp32"],
                        help="for --original-repo: time both models in each (bf16 = CPU bf16 autocast for both)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.original_repo is not None:
        import torch

        result = compare_original_repo(args.original_repo, args.preset, args.tokens, args.repeats,
                                       args.threads or torch.get_num_threads(), tuple(args.dtypes),
                                       layerscale=args.layerscale)
        result["machine"] = {"cpus": os.cpu_count(), "load_avg_end": os.getloadavg()}
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(result, indent=1))
        return

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
