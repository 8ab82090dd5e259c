"""Peak memory and CPU time of one ViT forward at a large patch grid, full 3D against 2.5D slabs.

Each case runs in a fresh child process (so every peak is its own): build ``--preset`` with
seeded weights, make a random preprocessed volume of ``--grid`` patches, and run
:func:`voxelfm.embed.extract.features_from_preprocessed` (the path ``voxelfm embed`` takes: fp32,
no grad, outputs copied back to numpy and put in canonical orientation) in ``3d`` mode and in
``2.5d`` mode (default slab thickness / overlap unless given). Reported per case: peak RSS
(``VmHWM``) after building the model and after the forward, and the forward's CPU seconds
(``time.process_time``: on a shared machine CPU seconds, not wall time, are comparable).
The 2.5D/3D CPU-second ratio is the throughput cost of slabs at that grid. ``--blocks K`` runs
only the first K blocks (every block's weights stay resident): the blocks are identical in shape
and each frees its input under no-grad, so the peak of one block is the peak of all twelve and the
per-block CPU ratio is the model's. Usage::

    nice -n 15 .venv/bin/python benchmarks/bench_memory.py --grid 40 25 25 --json mem.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, sys, time, resource
import numpy as np, torch
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
from voxelfm.core.geometry import Geometry
from voxelfm.embed.extract import features_from_preprocessed
from voxelfm.models import build_model
from voxelfm.preprocess import PreprocessSpec
from voxelfm.preprocess.pipeline import PreprocessedVolume

def status(key):  # GiB from /proc/self/status
    line = next(l for l in open("/proc/self/status") if l.startswith(key))
    return int(line.split()[1]) / 2**20

def hwm():  # this process's peak RSS (VmHWM; ru_maxrss would carry the parent's peak across exec)
    return status("VmHWM")

def rss():
    return status("VmRSS")

model = build_model(args["preset"], seed=0).eval()
weights_gib = sum(t.numel() * t.element_size() for t in model.parameters()) / 2**30
all_blocks = model.blocks  # every block's weights stay resident whatever --blocks runs
if args["blocks"]:
    model.blocks = torch.nn.ModuleList(list(all_blocks)[:args["blocks"]])
p = model.config.patch_size
shape = tuple(n * p for n in args["grid"])
rng = np.random.default_rng(0)
array = rng.standard_normal(shape, dtype=np.float32)
geo = Geometry(shape=shape, spacing=(0.75, 0.75, 0.75))
pre = PreprocessedVolume(array=array, geometry=geo, spec=PreprocessSpec(patch_size=p), source_geometry=geo,
                         hu=array)
out = {"mode": args["mode"], "grid": args["grid"], "patches": int(np.prod(args["grid"])),
       "input_gib": array.nbytes / 2**30,
       "weights_gib": weights_gib,
       "blocks_run": len(model.blocks), "peak_after_build_gib": hwm(), "rss_before_forward_gib": rss()}
def forward():
    return features_from_preprocessed(model, pre, mode=args["mode"], slab_thickness=args["thickness"],
                                      slab_overlap=args["overlap"])

if args["warmup"]:  # one untimed forward first: one-time kernel/allocator set-up out of the figure
    forward()
c0, t0 = time.process_time(), time.perf_counter()
feats = forward()
out.update(forward_cpu_s=time.process_time() - c0, forward_wall_s=time.perf_counter() - t0,
           peak_rss_gib=hwm(), patch_shape=list(feats.patch.shape), warmup=bool(args["warmup"]))
out["forward_peak_over_before_gib"] = out["peak_rss_gib"] - out["rss_before_forward_gib"]
print(json.dumps(out))
"""


def run_case(mode: str, overlap: int | None, args: argparse.Namespace) -> dict:
    payload = {"preset": args.preset, "grid": args.grid, "mode": mode, "threads": args.threads, "blocks": args.blocks,
               "thickness": args.thickness, "overlap": overlap, "warmup": args.warmup}
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(payload)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{mode} case failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(case_label(mode, overlap), json.dumps(result), flush=True)
    return result


def case_label(mode: str, overlap: int | None) -> str:
    return mode if mode == "3d" or overlap is None else f"{mode}-overlap{overlap}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="vit-base")
    parser.add_argument("--grid", type=int, nargs=3, default=[40, 25, 25], help="patch grid (d, h, w)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--blocks", type=int, default=0,
                        help="run only the first K transformer blocks (all weights stay loaded; 0: all). Every "
                             "block has the same shapes and frees its input, so one block reaches the full peak")
    parser.add_argument("--thickness", type=int, default=None, help="2.5D slab thickness in patches (default 4)")
    parser.add_argument("--overlap", type=int, default=None, help="2.5D slab overlap in patches (default 1)")
    parser.add_argument("--extra-overlaps", type=int, nargs="*", default=[],
                        help="also run 2.5D with these overlaps (labelled 2.5d-overlapK), e.g. 0: slabs that "
                             "share no rows, which separates the cost of re-run rows from the slab machinery")
    parser.add_argument("--modes", nargs="+", default=["2.5d", "3d"], choices=["2.5d", "3d"])
    parser.add_argument("--repeats", type=int, default=1,
                        help="run every case this many times, interleaved; ratios are per repeat, then the median")
    parser.add_argument("--warmup", action="store_true",
                        help="one untimed forward before the timed one in each child (throughput, not first call)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    cases = [(mode, args.overlap) for mode in args.modes]
    if "2.5d" in args.modes:
        cases += [("2.5d", k) for k in args.extra_overlaps]
    runs: dict[str, list[dict]] = {}
    for _ in range(args.repeats):
        for mode, overlap in cases:
            runs.setdefault(case_label(mode, overlap), []).append(run_case(mode, overlap, args))
    # The first repeat keeps the old layout (one dict per case); all repeats are under "runs".
    results: dict = {label: found[0] for label, found in runs.items()}
    if "3d" in runs:
        for label in [lab for lab in runs if lab != "3d"]:
            ratios = [a["forward_cpu_s"] / b["forward_cpu_s"] for a, b in zip(runs[label], runs["3d"], strict=True)]
            results[f"cpu_ratio_{label}_over_3d"] = statistics.median(ratios)
            results[f"cpu_ratios_{label}_over_3d"] = ratios
    results["cpu_s"] = {label: [r["forward_cpu_s"] for r in found] for label, found in runs.items()}
    results["runs"] = runs
    print(json.dumps({k: v for k, v in results.items() if k != "runs"}, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
