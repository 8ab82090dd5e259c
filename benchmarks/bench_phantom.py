"""Speed of the synthetic cohort generator (``voxelfm.data.phantom``).

Prints, for one size:
* in-memory generation time per scan (serial, median of ``--single`` scans),
* writing time per scan (NIfTI or DICOM),
* end-to-end ``write_cohort`` wall time for ``--n`` scans with ``--workers`` processes,
* CPU seconds per scan (``time.process_time``, single-threaded code): on a shared, loaded
  machine wall time is inflated by waiting, CPU time much less; ``200 x CPU s / cores`` is the
  expected wall time of a 200-scan cohort on an otherwise idle machine,
* a reference workload (float32 multiply-adds on a 4 M-voxel array) timed in the same run, so
  figures from a loaded, shared machine can be compared as ratios.

    .venv/bin/python benchmarks/bench_phantom.py --n 200 --size small --workers 2
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def reference_seconds(repeats: int = 20) -> float:
    """Median time of one fused-ish numpy pass over a (110, 192, 192) float32 array."""
    a = np.random.default_rng(0).standard_normal((110, 192, 192), dtype=np.float32)
    b = np.empty_like(a)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        np.multiply(a, 1.5, out=b)
        b += a
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="scans in the end-to-end cohort run")
    parser.add_argument("--size", default="small", choices=["tiny", "small", "standard"])
    parser.add_argument("--format", default="nifti", choices=["nifti", "dicom"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--single", type=int, default=5, help="scans timed one by one in memory")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from voxelfm.data.phantom import generate_scan, write_cohort
    from voxelfm.data.phantom.cohort import ScanPlan
    from voxelfm.data.phantom.writer import _write_scan

    ref = reference_seconds()
    generate_scan(0, seed=args.seed, size="tiny")  # warm imports
    gen_times, write_times, shapes, gen_cpu, write_cpu = [], [], [], [], []
    tmp = Path(tempfile.mkdtemp(prefix="bench_phantom_"))
    try:
        for i in range(args.single):
            t, c = time.perf_counter(), time.process_time()
            scan = generate_scan(1000 + i, seed=args.seed, size=args.size, format=args.format)
            gen_times.append(time.perf_counter() - t)
            gen_cpu.append(time.process_time() - c)
            shapes.append(scan.volume.shape)
            plan = ScanPlan(1000 + i, 0, scan.patient_id, scan.scan_id)
            t, c = time.perf_counter(), time.process_time()
            _write_scan(scan, tmp / "single", args.format, args.seed, plan)
            write_times.append(time.perf_counter() - t)
            write_cpu.append(time.process_time() - c)
        out = tmp / "cohort"
        t = time.perf_counter()
        write_cohort(out, n=args.n, seed=args.seed, format=args.format, size=args.size, workers=args.workers)
        wall = time.perf_counter() - t
        size_mb = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1e6
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    voxels = statistics.median(int(np.prod(s)) for s in shapes)
    gen, wr = statistics.median(gen_times), statistics.median(write_times)
    print(f"size={args.size} format={args.format} workers={args.workers} n={args.n}")
    print(f"scan shapes (first {args.single}): {shapes}; median {voxels / 1e6:.2f} M voxels")
    print(f"reference pass (4.1 M float32 mul+add): {ref * 1e3:.2f} ms")
    g_cpu, w_cpu = statistics.median(gen_cpu), statistics.median(write_cpu)
    print(f"generate in memory: {gen:.3f} s/scan wall, {g_cpu:.3f} s CPU (median; {gen / ref:.0f} reference passes)")
    print(f"write {args.format}: {wr:.3f} s/scan wall, {w_cpu:.3f} s CPU (median)")
    print(f"idle-machine estimate for 200 scans on {args.workers} cores: "
          f"{200 * (g_cpu + w_cpu) / args.workers:.0f} s (200 x CPU s / workers)")
    print(f"write_cohort {args.n} scans: {wall:.1f} s wall = {wall / args.n:.3f} s/scan, "
          f"{args.n / wall:.2f} scans/s, {size_mb:.0f} MB on disk")


if __name__ == "__main__":
    main()
