"""Peak RSS of ``load_model`` and of ``load_model`` + one forward, each in a fresh child process.

Saves a seeded ``--preset`` model directory, then for each stage starts a child that imports
voxelfm, loads the model and (for ``forward``) runs one fp32 forward over a ``--grid`` patch grid,
and reports the child's peak RSS (``VmHWM``) beside the RSS after imports and the size of the
weights. Usage::

    nice -n 10 .venv/bin/python benchmarks/bench_load_rss.py --preset vit-base --grid 8 8 8
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, sys, time, torch
torch.set_num_threads(int(sys.argv[3]))
from voxelfm.models import load_model
def hwm():  # this process's peak RSS (VmHWM; ru_maxrss would carry the parent's peak across exec)
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM"))
    return int(line.split()[1]) / 2**20
after_imports = hwm()
t0 = time.perf_counter()
model = load_model(sys.argv[1])
load_s = time.perf_counter() - t0
out = {"after_imports_gib": after_imports, "load_s": load_s,
       "weights_gib": sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30}
if sys.argv[2] != "load":
    d, h, w = json.loads(sys.argv[2])
    p = model.config.patch_size
    x = torch.randn(1, d * p, h * p, w * p, generator=torch.Generator().manual_seed(0))
    t0 = time.perf_counter()
    with torch.inference_mode():
        model(x)
    out["forward_s"] = time.perf_counter() - t0
out["peak_rss_gib"] = hwm()
print(json.dumps(out))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="vit-base")
    parser.add_argument("--grid", type=int, nargs=3, default=[8, 8, 8])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    from voxelfm.models import build_model, save_model
    from voxelfm.preprocess import PreprocessSpec

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        model = build_model(args.preset, seed=0)
        save_model(model, folder, spec=PreprocessSpec(patch_size=model.config.patch_size))
        del model
        results = {}
        for stage, arg in (("load", "load"), ("load+forward", json.dumps(args.grid))):
            done = subprocess.run([sys.executable, "-c", CHILD, str(folder), arg, str(args.threads)],
                                  capture_output=True, text=True, check=True)
            results[stage] = json.loads(done.stdout.strip().splitlines()[-1])
            print(stage, json.dumps(results[stage]), flush=True)
    print(json.dumps({"preset": args.preset, "grid": args.grid, **results}, indent=1))


if __name__ == "__main__":
    main()
