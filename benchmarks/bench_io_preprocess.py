"""Time and memory of reading CT and of the preprocessing steps on a full-size synthetic scan.

Prints, for one synthetic 512 x 512 chest-like volume:
* the background-crop box filter: voxelfm's streaming integral-image version vs
  ``scipy.ndimage.uniform_filter`` on the whole volume (time, peak traced memory, same box?);
* the full default ``preprocess`` (clip, crop, isotropic resample, 25k-patch budget, crop, norm);
* writing and reading the scan back as a DICOM series and as NIfTI.

Usage: ``python benchmarks/bench_io_preprocess.py [--slices N]``. Machine is shared: compare the
ratios printed in one run, not absolute seconds across runs.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from voxelfm.core import CTVolume, Geometry
from voxelfm.io import load_ct, write_dicom_series, write_nifti
from voxelfm.preprocess import PreprocessSpec, foreground_box, preprocess


def synthetic_scan(slices: int) -> CTVolume:
    shape = (slices, 512, 512)
    rng = np.random.default_rng(0)
    y, x = np.meshgrid(np.linspace(-1, 1, 512), np.linspace(-1, 1, 512), indexing="ij")
    plane = np.full((512, 512), -1000.0, dtype=np.float32)
    plane[(y / 0.6) ** 2 + (x / 0.8) ** 2 < 1] = 40.0
    plane[((y + 0.05) / 0.4) ** 2 + ((np.abs(x) - 0.35) / 0.25) ** 2 < 1] = -850.0
    plane[480:486, :] = 300.0  # table
    array = np.repeat(plane[None], slices, axis=0)
    array += rng.normal(0, 15, shape).astype(np.float32)
    return CTVolume(array=array, geometry=Geometry(shape=shape, spacing=(1.25, 0.7, 0.7)))


def timed(fn):
    t0 = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t0


def measure(fn):
    """Time and peak numpy memory (tracemalloc sees numpy buffers, not torch's)."""
    tracemalloc.start()
    t0 = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return result, seconds, peak / 2**20


def scipy_box(array: np.ndarray, threshold: float = -800.0, k: int = 21):
    from scipy.ndimage import uniform_filter

    mean = uniform_filter((array > threshold).astype(np.float32), size=k, mode="constant", cval=0.0)
    mask = mean > 0.5
    box = []
    for axis in range(3):
        idx = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append((int(idx[0]), int(idx[-1]) + 1))
    return tuple(box)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--slices", type=int, default=200)
    args = parser.parse_args()
    volume = synthetic_scan(args.slices)
    mb = volume.array.nbytes / 2**20
    print(f"volume {volume.shape} float32 = {mb:.0f} MiB")

    box, t_stream, m_stream = measure(lambda: foreground_box(volume.array))
    ref, t_scipy, m_scipy = measure(lambda: scipy_box(volume.array))
    print(f"box filter streaming  : {t_stream:6.2f} s, peak {m_stream:7.1f} MiB, box {box}")
    print(f"box filter scipy      : {t_scipy:6.2f} s, peak {m_scipy:7.1f} MiB, same box: {box == ref}")
    print(f"ratio scipy/streaming : time {t_scipy / t_stream:.2f}x, memory {m_scipy / max(m_stream, 1e-9):.1f}x")

    out, t_pre = timed(lambda: preprocess(volume, PreprocessSpec()))
    print(f"preprocess (default)  : {t_pre:6.2f} s -> {out.shape}, "
          f"{int(np.prod(out.grid_shape()))} patches")

    with tempfile.TemporaryDirectory() as tmp:
        _, t_wd = timed(lambda: write_dicom_series(volume, Path(tmp) / "dcm"))
        loaded, t_rd = timed(lambda: load_ct(Path(tmp) / "dcm"))
        assert np.array_equal(loaded.array, np.clip(np.rint(volume.array), -1024, None))
        _, t_wn = timed(lambda: write_nifti(volume.array, volume.geometry, Path(tmp) / "scan.nii.gz"))
        _, t_rn = timed(lambda: load_ct(Path(tmp) / "scan.nii.gz"))
    print(f"DICOM write / read    : {t_wd:6.2f} s / {t_rd:6.2f} s ({args.slices} files)")
    print(f"NIfTI.gz write / read : {t_wn:6.2f} s / {t_rn:6.2f} s")
    print(f"peak RSS of the run   : {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
