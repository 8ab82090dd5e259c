"""Synthetic prepared-volume datasets for the ssl tests (HU blobs written as a prepared folder)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch


def make_volume(rng: np.random.Generator, shape: tuple[int, int, int] = (40, 48, 44)) -> np.ndarray:
    """The shared body phantom (``synthetic_ct``) with random dense blobs, so volumes differ."""
    # Imported here: the torchrun workers import this module for ``tiny_overrides`` only, without
    # pytest's conftest that puts tests/ on sys.path.
    from synthetic_ct import body_hu

    return body_hu(shape, rng, noise_hu=20.0, blobs=True)


def make_prepared(folder: Path, n: int = 6, seed: int = 0, shape: tuple[int, int, int] = (40, 48, 44)) -> Path:
    """Write ``n`` int16 volumes and an ``index.csv`` (path, shape_final); returns the CSV path."""
    rng = np.random.default_rng(seed)
    (folder / "volumes").mkdir(parents=True, exist_ok=True)
    lines = ["path,shape_final"]
    for i in range(n):
        vol = make_volume(rng, shape).round().astype(np.int16)
        np.save(folder / "volumes" / f"v{i}.npy", vol)
        lines.append(f'volumes/v{i}.npy,"{list(vol.shape)}"')
    (folder / "index.csv").write_text("\n".join(lines) + "\n")
    return folder / "index.csv"


def tiny_overrides(index: Path, **extra: object) -> list[str]:
    """A seconds-fast config: a 2-block ViT, 28^3 globals, 14^3 locals, 64 prototypes."""
    base = {
        "datasets.0.index_path": str(index),
        "student.embed_dim": 36, "student.depth": 2, "student.num_heads": 1, "student.num_register_tokens": 2,
        "student.drop_path_rate": 0.0,
        "dino.head_n_prototypes": 64, "dino.head_hidden_dim": 32, "dino.head_bottleneck_dim": 16,
        "ibot.head_n_prototypes": 64, "ibot.head_hidden_dim": 32, "ibot.head_bottleneck_dim": 16,
        "train.batch_size_per_gpu": 2, "train.grad_accum_steps": 1, "train.total_batch_size": None,
        "train.num_workers": 0, "train.max_steps": 6, "train.device": "cpu",
        "crops.global_crops_size": 28, "crops.local_crops_size": 14, "crops.local_crops_number": 2,
        "checkpointing.period": 2, "checkpointing.max_to_keep": 2,
        "monitor.log_period": 1, "monitor.progress": False, "monitor.tensorboard": False,
        "compute_precision": "fp32",
    }
    base.update(extra)
    return [f"{k}={'null' if v is None else v}" for k, v in base.items()]


@contextmanager
def single_thread() -> Iterator[None]:
    """Tiny models run several times faster on one thread on a shared, loaded machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
