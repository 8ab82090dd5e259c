"""``voxelfm embed`` throughput (scans/min): reader workers vs none, on a synthetic NIfTI cohort.

Writes ``--n`` body-phantom CT volumes (anisotropic spacing, so preprocessing really resamples)
as NIfTI, then embeds them with the same model into fresh stores with ``--workers 0`` and
``--workers 2``, alternating the order over ``--rounds`` rounds, and reports the best throughput
of each. With 0 workers, reading + preprocessing and the forward pass run one after the other;
with workers they overlap.

Usage::

    nice -n 10 .venv/bin/python benchmarks/bench_embed.py --n 12 --preset vit-tiny --max-patches 512
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def write_cohort(folder: Path, n: int, shape: tuple[int, int, int], seed: int = 0) -> None:
    """``n`` NIfTI phantoms: air, a soft-tissue body with lungs and a spine, noise; 2.5 × 0.8 × 0.8 mm."""
    from voxelfm.core import Geometry
    from voxelfm.io import write_nifti

    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    for i in range(n):
        hu = np.full(shape, -1000.0, dtype=np.float32)
        scale = 0.75 + 0.1 * rng.random()
        body = (y / scale) ** 2 + (x / (scale + 0.1)) ** 2 < 1
        hu[body] = 40.0
        for side in (-1, 1):
            lung = ((x - 0.4 * side) / 0.28) ** 2 + (y / 0.45) ** 2 + (z / 1.1) ** 2 < 1
            hu[lung & body] = -850.0
        hu[((y - 0.55) / 0.12) ** 2 + (x / 0.12) ** 2 < 1] = 700.0
        hu += rng.normal(0, 15, shape).astype(np.float32)
        write_nifti(hu, Geometry(shape, (2.5, 0.8, 0.8)), folder / f"scan{i:03d}.nii.gz")


def stage_times(model, sources: list[str], spec, workers: int) -> dict[str, float]:
    """Mean seconds of read+preprocess and of the forward pass, measured one after the other, and
    the best speed-up ``workers`` readers could give with a free core each: (p + f) / max(p / W, f)."""
    from voxelfm.embed import features_from_preprocessed
    from voxelfm.io import load_ct
    from voxelfm.preprocess import preprocess

    pre_s, fwd_s = [], []
    for source in sources:
        t0 = time.perf_counter()
        pre = preprocess(load_ct(source), spec)
        t1 = time.perf_counter()
        features_from_preprocessed(model, pre)
        pre_s.append(t1 - t0)
        fwd_s.append(time.perf_counter() - t1)
    p, f = float(np.mean(pre_s)), float(np.mean(fwd_s))
    return {"preprocess_s": p, "forward_s": f, "workers": workers,
            "max_overlap_speedup": (p + f) / max(p / max(workers, 1), f)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=12, help="scans in the synthetic cohort")
    parser.add_argument("--shape", type=int, nargs=3, default=[96, 256, 256], help="z y x voxels per scan")
    parser.add_argument("--preset", default="vit-tiny")
    parser.add_argument("--max-patches", type=int, default=512)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from voxelfm.embed import EmbeddingStore, collect_jobs, run_embedding
    from voxelfm.models import build_model
    from voxelfm.preprocess import PreprocessSpec

    work = Path(tempfile.mkdtemp(prefix="bench_embed_"))
    try:
        start = time.perf_counter()
        write_cohort(work / "cohort", args.n, tuple(args.shape))
        print(f"wrote {args.n} scans of {tuple(args.shape)} in {time.perf_counter() - start:.1f} s", flush=True)
        spec = PreprocessSpec(max_patches=args.max_patches)
        model = build_model(args.preset, seed=0, spec=spec).eval()
        jobs = collect_jobs([work / "cohort"])
        split = stage_times(model, [j.source for j in jobs[:2]], spec, max(args.workers))
        print(f"per scan: read+preprocess {split['preprocess_s']:.2f} s, forward {split['forward_s']:.2f} s "
              f"({split['workers']} workers could at best give {split['max_overlap_speedup']:.2f}x, "
              "with a free core per process)", flush=True)
        best: dict[int, float] = {}
        runs = []
        for r in range(args.rounds):
            order = args.workers if r % 2 == 0 else list(reversed(args.workers))
            for workers in order:
                store = work / f"store-{workers}-{r}"
                summary = run_embedding(model, jobs, EmbeddingStore(store), workers=workers)
                if summary.failed:
                    raise SystemExit(f"{summary.failed} scans failed: {summary.failures[:2]}")
                rate = summary.scans_per_minute
                runs.append({"round": r, "workers": workers, "seconds": summary.seconds, "scans_per_min": rate})
                best[workers] = max(best.get(workers, 0.0), rate)
                print(f"round {r} workers={workers}: {summary.done} scans in {summary.seconds:.1f} s "
                      f"= {rate:.1f} scans/min", flush=True)
        base = best[min(best)]
        for workers, rate in sorted(best.items()):
            print(f"best workers={workers}: {rate:.1f} scans/min ({rate / base:.2f}x vs workers={min(best)})")
        if args.json:
            args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                             "stage_times": split, "runs": runs, "best": best}, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
