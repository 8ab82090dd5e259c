"""Same-run before/after of the ViT forward's CPU changes of issue 17 (session 10), in CPU seconds.

"before" restores, by monkeypatching in this one process, the three code paths as they were at
b5018b9: RoPE applied to q and k separately with slicing + ``torch.cat`` (``apply_rope``),
the patch-embedding convolution under bf16 autocast, and autocast re-casting every linear weight in
each forward. "after" is the current code. Forwards alternate before/after per repeat on the same
input; outputs of the two are compared. Usage::

    nice -n 10 .venv/bin/python benchmarks/bench_forward_ab.py --tokens 512 4096 --dtypes fp32 bf16 --repeats 4
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from voxelfm.models import build_model, layers, vit
from voxelfm.models.rope import apply_rope


def _old_attention(self, x, rope, num_special):  # noqa: ANN001, ANN202 - the code as it was
    b, n, c = x.shape
    qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    if rope is not None:
        sin, cos = rope
        q = torch.cat((q[:, :, :num_special], apply_rope(q[:, :, num_special:], sin, cos)), dim=2)
        k = torch.cat((k[:, :, :num_special], apply_rope(k[:, :, num_special:], sin, cos)), dim=2)
    out = F.scaled_dot_product_attention(q, k, v)
    return self.proj(out.transpose(1, 2).reshape(b, n, c))


def _old_patch_embed(self, x):  # noqa: ANN001, ANN202
    x = self.proj(x.unsqueeze(1))
    grid = tuple(int(s) for s in x.shape[2:])
    return x.flatten(2).transpose(1, 2), grid


NEW = {"attn": layers.Attention.forward, "embed": layers.PatchEmbed3D.forward}


def _set(impl: str) -> None:
    old = impl == "before"
    layers.Attention.forward = _old_attention if old else NEW["attn"]
    layers.PatchEmbed3D.forward = _old_patch_embed if old else NEW["embed"]


def _forward(model: vit.VisionTransformer3D, impl: str, x: torch.Tensor, dtype: str) -> dict:
    _set(impl)
    if impl == "after" or dtype == "fp32":
        return model.forward_features(x, autocast_dtype=torch.bfloat16 if dtype == "bf16" else None)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):  # the old forward_features
        out = model.forward(x)
    return {"cls": out["x_norm_clstoken"].float(), "patch": out["x_norm_patchtokens"].float()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="vit-base")
    parser.add_argument("--tokens", type=int, nargs="+", default=[512, 4096])
    parser.add_argument("--dtypes", nargs="+", choices=("fp32", "bf16"), default=["fp32", "bf16"])
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = build_model(args.preset, seed=0).eval()
    p = model.patch_size
    warm = torch.randn(1, 8 * p, 8 * p, 8 * p)
    for impl in ("before", "after"):
        for dtype in args.dtypes:
            _forward(model, impl, warm, dtype)
    rows = []
    for tokens in args.tokens:
        side = round(tokens ** (1 / 3))
        x = torch.randn(1, side * p, side * p, side * p, generator=torch.Generator().manual_seed(tokens))
        for dtype in args.dtypes:
            times: dict[str, list[float]] = {"before": [], "after": []}
            outs = {}
            for rep in range(args.repeats):
                for impl in ("before", "after") if rep % 2 == 0 else ("after", "before"):
                    c0 = time.process_time()
                    outs[impl] = _forward(model, impl, x, dtype)
                    times[impl].append(time.process_time() - c0)
            a, b = outs["before"], outs["after"]
            cos = F.cosine_similarity(a["cls"].double(), b["cls"].double(), dim=-1).min()
            row = {"tokens": side**3, "dtype": dtype, "cpu_s": times,
                   "ratio_before_over_after": [u / v for u, v in zip(times["before"], times["after"], strict=True)],
                   "best_ratio": min(times["before"]) / min(times["after"]),
                   "cls_max_abs": float((a["cls"] - b["cls"]).abs().max()),
                   "patch_max_abs": float((a["patch"] - b["patch"].reshape(a["patch"].shape)).abs().max()),
                   "cls_cosine": float(cos)}
            row["median_ratio"] = statistics.median(row["ratio_before_over_after"])
            print(json.dumps(row), flush=True)
            rows.append(row)
    _set("after")
    if args.json:
        args.json.write_text(json.dumps({"preset": args.preset, "threads": args.threads, "rows": rows}, indent=1))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
