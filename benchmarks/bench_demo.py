"""Wall and CPU time of ``voxelfm demo`` per stage (and in total), from a fresh output directory.

    nice -n 10 .venv/bin/python benchmarks/bench_demo.py --size small --out /tmp/demo-small

Prints one line per stage and the total; ``--json`` writes the same figures. The stage times are
the ones the demo records in ``OUT/.stages/<stage>.json`` (the render stage included).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small", choices=["tiny", "small", "standard"])
    parser.add_argument("--out", type=Path, default=Path("/tmp/voxelfm-demo-bench"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--keep", action="store_true", help="resume an existing --out instead of starting fresh")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from voxelfm.demo import run_demo

    if args.out.exists() and not args.keep:
        shutil.rmtree(args.out)
    start = time.perf_counter()
    result = run_demo(args.out, size=args.size, device=args.device)
    wall = time.perf_counter() - start
    cpu = {}
    for name in result.timings:
        marker = json.loads((args.out / ".stages" / f"{name}.json").read_text())
        cpu[name] = marker.get("cpu_seconds")
    figures = {"size": args.size, "device": args.device, "stages": result.timings, "cpu_seconds": cpu,
               "wall_seconds": round(wall, 1)}
    for name, seconds in result.timings.items():
        cpu_text = f"  ({cpu[name]:.0f} CPU-s)" if cpu.get(name) is not None else ""
        print(f"{name:10s} {seconds:8.1f} s{cpu_text}")
    print(f"{'total':10s} {wall:8.1f} s  ({wall / 60:.1f} min)")
    results = json.loads(result.results_json.read_text())
    for row in results["tasks"]:
        values = "  ".join(f"{k}={v['value']:.3f}" if v["value"] is not None else f"{k}=n/a"
                           for k, v in row["values"].items())
        d = ""
        for key, label in (("difference", "pre-rnd"), ("baseline_difference", "pre-hist")):
            diff = row.get(key) or {}
            if diff.get("low") is not None:
                d += f"  {label}={diff['value']:+.3f} [{diff['low']:+.3f}, {diff['high']:+.3f}]"
        print(f"{row['category']:18s} {row['task'][:40]:40s} {row['metric']:22s} {values}{d}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
