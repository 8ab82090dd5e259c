"""CPU forward time and peak memory of the five backbones at their native input sizes, fp32 and bf16.

Each (backbone, dtype) runs in its own child process so peak RSS (``ru_maxrss``) does not mix:
the child builds the released architecture with seeded random weights (speed does not depend on
the values), makes a random native input, runs one warm-up forward on it, then times
``--repeats`` forwards (``forward_features``; bf16 = autocast, outputs in fp32) and reports the
best. Native inputs:

* voxelfm   vit-base (864 wide, patch 14) on a (378, 420, 420) volume: 27×30×30 = 24,300 patches,
            the largest grid under the paper's 25,000-patch budget;
* m3d-clip  (1, 1, 32, 256, 256): 2,048 tokens + CLS;
* ct-clip   (1, 1, 240, 480, 480): 24×24×24 tokens, VQ, 512-d latent;
* merlin    (1, 1, 224, 224, 160): layer-4 map 10×7×7;
* radfm     (1, 3, 512, 512, 64): 16×16×16 = 4,096 tokens.

Usage::

    nice -n 10 .venv/bin/python benchmarks/bench_backbones.py               # all, fp32 + bf16
    .venv/bin/python benchmarks/bench_backbones.py --only merlin --dtypes fp32 --json out.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

NATIVE = {
    "voxelfm": (1, 378, 420, 420),
    "m3d-clip": (1, 1, 32, 256, 256),
    "ct-clip": (1, 1, 240, 480, 480),
    "merlin": (1, 1, 224, 224, 160),
    "radfm": (1, 3, 512, 512, 64),
}


def _child(name: str, dtype: str, repeats: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    if name == "voxelfm":
        from voxelfm.models import build_model

        model = build_model("vit-base", seed=0).eval()
    else:
        from voxelfm.models.backbones import backbone_class

        cls = backbone_class(name)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = cls(cls.config_class()).eval()
    params = sum(p.numel() for p in model.parameters())
    x = torch.rand(NATIVE[name], generator=torch.Generator().manual_seed(0))
    autocast = torch.bfloat16 if dtype == "bf16" else None
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    out = model.forward_features(x, autocast_dtype=autocast)
    warm = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = model.forward_features(x, autocast_dtype=autocast)
        times.append(time.perf_counter() - start)
    return {"backbone": name, "dtype": dtype, "input": list(NATIVE[name]), "params_m": round(params / 1e6, 2),
            "grid": list(out["grid"]), "cls_dim": int(out["cls"].shape[-1]),
            "first_s": round(warm, 2), "best_s": round(min(times), 2) if times else None,
            "rss_before_forward_mib": round(rss_before / 1024), "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "threads": threads}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=list(NATIVE), choices=list(NATIVE))
    parser.add_argument("--dtypes", nargs="*", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--repeats", type=int, default=1, help="timed forwards after the warm-up (best reported)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="write all records to this file")
    parser.add_argument("--child", nargs=2, metavar=("NAME", "DTYPE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child[0], args.child[1], args.repeats, args.threads)))
        return
    records = []
    print(f"{'backbone':10} {'dtype':5} {'input':24} {'params M':>9} {'grid':>12} {'first s':>8} {'best s':>7} {'peak MiB':>9}")
    for name in args.only:
        for dtype in args.dtypes:
            cmd = [sys.executable, __file__, "--child", name, dtype, "--repeats", str(args.repeats),
                   "--threads", str(args.threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
                print(f"{name:10} {dtype:5} failed: {tail}")
                records.append({"backbone": name, "dtype": dtype, "error": tail})
                continue
            rec = json.loads(proc.stdout.strip().splitlines()[-1])
            records.append(rec)
            print(f"{name:10} {dtype:5} {'x'.join(map(str, rec['input'])):24} {rec['params_m']:9.2f} "
                  f"{'x'.join(map(str, rec['grid'])):>12} {rec['first_s']:8.2f} {rec['best_s'] or float('nan'):7.2f} "
                  f"{rec['peak_rss_mib']:9d}", flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(records, handle, indent=2)


if __name__ == "__main__":
    main()
