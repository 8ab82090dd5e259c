"""Pretraining data: prepared volume datasets, a weighted multi-dataset sample stream, and the
per-micro-batch builder (crops + masks).

Reproducibility by construction: the content of micro-batch ``g`` of optimizer step ``s`` (which
volumes, every crop, every mask) is a pure function of ``(train.seed, s, g)``. Micro-batch
``g = accum_index * world_size + rank``, so ranks read disjoint slices of one global stream
(sharded like the original ``start=rank, step=world_size`` samplers), a resumed run continues the
exact data order, and a single process with ``grad_accum_steps = k`` sees exactly the global batch
of ``k`` ranks. Nothing depends on DataLoader worker scheduling.
"""

from __future__ import annotations

import ast
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from voxelfm.core.errors import DataError, located
from voxelfm.ssl.augment import MultiCropAugmentation, Size3
from voxelfm.ssl.masking import MaskingGenerator3D, stratified_masks

log = logging.getLogger(__name__)

# Distinct stream ids so augmentation, masking and crop-pair draws never share random numbers.
_AUG, _MASK, _PAIR, _EPOCH = 1, 2, 3, 4


def parse_shape(text: Any, source: object) -> tuple[int, ...]:
    """``"[D, H, W]"`` (or ``(D, H, W)``) -> tuple of ints."""
    try:
        value = ast.literal_eval(str(text))
        shape = tuple(int(v) for v in value)
    except (ValueError, SyntaxError, TypeError):
        raise DataError(located(source, f"shape_final {text!r} is not a list like [D, H, W]")) from None
    if len(shape) != 3:
        raise DataError(located(source, f"shape_final {text!r} does not have 3 dimensions"))
    return shape


def open_volume(path: Path) -> np.ndarray | torch.Tensor:
    """Memory-map a prepared volume: ``.npy`` (numpy) or ``.pt/.pth`` (a tensor saved by torch).

    Anything but a 3D real numeric array is refused with one line naming the file.
    """
    import pickle

    try:
        if path.suffix == ".npy":
            obj: Any = np.load(path, mmap_mode="r", allow_pickle=False)
        else:
            obj = torch.load(path, mmap=True, weights_only=True, map_location="cpu")
    except (ValueError, OSError, EOFError, RuntimeError, pickle.UnpicklingError, TypeError) as exc:
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise DataError(located(path, f"not a readable prepared volume ({type(exc).__name__}: {first[:120]})")) from None
    if isinstance(obj, np.ndarray):
        numeric = np.issubdtype(obj.dtype, np.number) and not np.iscomplexobj(obj)
        kind = f"a numpy array of dtype {obj.dtype}"
    elif isinstance(obj, torch.Tensor):
        numeric = not obj.is_complex() and obj.dtype != torch.bool
        kind = f"a tensor of dtype {obj.dtype}"
    else:
        numeric, kind = False, f"a {type(obj).__name__}"
    if not numeric:
        raise DataError(located(path, f"a prepared volume must be a real numeric 3D array, found {kind}"))
    if obj.ndim != 3:
        raise DataError(located(path, f"a prepared volume must be a 3D array, found shape {tuple(obj.shape)}"))
    return obj


class VolumeDataset:
    """The volumes listed in one index CSV (columns ``path`` and ``shape_final``).

    Relative paths are resolved against the CSV's folder (or ``root``). Rows whose file is missing
    or whose smallest side is below ``min_side`` are dropped, as in the original.
    """

    def __init__(self, index_path: str | Path, *, min_side: int = 0, root: str | Path | None = None,
                 name: str | None = None) -> None:
        index_path = Path(index_path)
        if index_path.is_dir():
            index_path = index_path / "index.csv"
        if not index_path.is_file():
            raise DataError(located(index_path, "dataset index not found (run `voxelfm pretrain prepare`)"))
        try:
            table = pd.read_csv(index_path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise DataError(located(index_path, f"unreadable CSV ({exc})")) from None
        missing = {"path", "shape_final"} - set(table.columns)
        if missing:
            raise DataError(located(index_path, f"missing columns {sorted(missing)}"))
        base = Path(root) if root else index_path.parent
        self.name = name or index_path.parent.name
        self.paths: list[Path] = []
        self.shapes: list[tuple[int, ...]] = []
        dropped_missing = dropped_small = 0
        for row in table.itertuples(index=False):
            path = Path(str(row.path))
            path = path if path.is_absolute() else base / path
            shape = parse_shape(row.shape_final, index_path)
            if not path.is_file():
                dropped_missing += 1
            elif min(shape) < min_side:
                dropped_small += 1
            else:
                self.paths.append(path)
                self.shapes.append(shape)
        if dropped_missing or dropped_small:
            log.warning("%s: dropped %d missing and %d too-small (< %d voxels) volumes",
                        index_path, dropped_missing, dropped_small, min_side)
        if not self.paths:
            raise DataError(located(index_path, f"no usable volumes (missing {dropped_missing}, smaller than {min_side}: {dropped_small})"))
        self._open: dict[int, np.ndarray | torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> np.ndarray | torch.Tensor:
        # Memory maps are opened lazily so the dataset pickles cheaply into DataLoader workers.
        if index not in self._open:
            self._open[index] = open_volume(self.paths[index])
        return self._open[index]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_open"] = {}
        return state


class WeightedSampleStream:
    """An infinite, seeded stream of ``(dataset, item)`` pairs over several datasets.

    Each nominal epoch draws ``max(1, int(w_i / sum(w) * min_size))`` random items (without
    replacement when possible) from dataset ``i`` and shuffles them, as the original
    ``WeightedInfiniteSampler``. Position ``p`` of the stream is computable directly.
    """

    def __init__(self, sizes: Sequence[int], weights: Sequence[float], seed: int) -> None:
        total = float(sum(weights))
        smallest = min(sizes)
        self.sizes = list(sizes)
        self.counts = [max(1, int(w / total * smallest)) for w in weights]
        self.epoch_length = sum(self.counts)
        self.seed = seed
        self._cache: tuple[int, np.ndarray] | None = None

    def _epoch(self, epoch: int) -> np.ndarray:
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        rng = np.random.default_rng([self.seed, _EPOCH, epoch])
        parts = []
        for ds, (size, count) in enumerate(zip(self.sizes, self.counts, strict=True)):
            items = rng.choice(size, size=count, replace=count > size)
            parts.append(np.stack([np.full(count, ds), items], axis=1))
        order = np.concatenate(parts)[rng.permutation(self.epoch_length)]
        self._cache = (epoch, order)
        return order

    def __getitem__(self, position: int) -> tuple[int, int]:
        epoch, offset = divmod(int(position), self.epoch_length)
        ds, item = self._epoch(epoch)[offset]
        return int(ds), int(item)


@dataclass(frozen=True)
class CropPair:
    """One (global size, local size) resolution with its augmentation per dataset and masks."""

    global_size: Size3
    local_size: Size3
    augmentations: tuple[MultiCropAugmentation, ...]  # one per dataset (own pixel range / norm)
    masking: MaskingGenerator3D


class MicroBatchBuilder:
    """Builds micro-batch ``g`` of step ``s`` (see the module docstring)."""

    def __init__(self, config: Mapping[str, Any], datasets: Sequence[VolumeDataset], pairs: Sequence[CropPair],
                 ratios: Sequence[float], *, world_size: int = 1) -> None:
        self.datasets = list(datasets)
        self.pairs = list(pairs)
        self.ratios = np.asarray(ratios, dtype=np.float64)
        train = config["train"]
        self.seed = int(train["seed"])
        self.batch_size = int(train["batch_size_per_gpu"])
        self.micro_per_step = int(train["grad_accum_steps"]) * world_size
        self.stream = WeightedSampleStream([len(d) for d in datasets],
                                           [float(d.get("weight", 1.0)) for d in config["datasets"]], self.seed)
        ibot = config["ibot"]
        self.mask_probability = float(ibot["mask_sample_probability"]) if float(ibot["loss_weight"]) > 0 else 0.0
        self.mask_ratio = tuple(float(v) for v in ibot["mask_ratio_min_max"])

    def pair_index(self, step: int) -> int:
        """The crop resolution of a step: the same on every rank and micro-batch of the step."""
        if len(self.pairs) == 1:
            return 0
        rng = np.random.default_rng([self.seed, _PAIR, step])
        return int(rng.choice(len(self.pairs), p=self.ratios))

    def build(self, step: int, micro: int) -> dict[str, Any]:
        """Collated crops and masks of global micro-batch ``micro`` of optimizer ``step``."""
        pair = self.pairs[self.pair_index(step)]
        first = (step * self.micro_per_step + micro) * self.batch_size
        samples = []
        for position in range(first, first + self.batch_size):
            ds, item = self.stream[position]
            rng = np.random.default_rng([self.seed, _AUG, position])
            samples.append(pair.augmentations[ds](self.datasets[ds][item], rng))
        n_local = len(samples[0]["local_crops"])
        global_crops = torch.stack([s["global_crops"][i] for i in range(2) for s in samples])
        local_crops = (torch.stack([s["local_crops"][i] for i in range(n_local) for s in samples])
                       if n_local else torch.zeros(0, *pair.local_size))
        masks = stratified_masks(2 * self.batch_size, pair.masking, np.random.default_rng([self.seed, _MASK, step, micro]),
                                 self.mask_probability, self.mask_ratio)
        return {"step": step, "micro": micro, "global_crops": global_crops, "local_crops": local_crops,
                "n_local_crops": n_local, **masks}


class StepBatches(torch.utils.data.Dataset):
    """Map-style view for a DataLoader: item ``i`` = this rank's ``i``-th micro-batch."""

    def __init__(self, builder: MicroBatchBuilder, rank: int, world_size: int, accum: int) -> None:
        self.builder, self.rank, self.world_size, self.accum = builder, rank, world_size, accum

    def __len__(self) -> int:  # effectively infinite; the sampler bounds it
        return 2**62

    def __getitem__(self, index: int) -> dict[str, Any]:
        step, accum_index = divmod(int(index), self.accum)
        return self.builder.build(step, accum_index * self.world_size + self.rank)


def micro_batches(builder: MicroBatchBuilder, *, start_step: int, end_step: int, rank: int, world_size: int,
                  accum: int, num_workers: int = 0) -> torch.utils.data.DataLoader:
    """A DataLoader over this rank's micro-batches for steps ``[start_step, end_step)``, in order."""
    import functools
    import os

    dataset = StepBatches(builder, rank, world_size, accum)
    indices = range(start_step * accum, end_step * accum)
    # workers end with the trainer, even after a kill -9 (no orphans holding volumes in memory)
    init = functools.partial(_worker_exits_with, os.getpid()) if num_workers else None
    return torch.utils.data.DataLoader(
        dataset, batch_size=None, sampler=indices, num_workers=num_workers,
        persistent_workers=False, prefetch_factor=2 if num_workers else None, worker_init_fn=init,
    )


def _worker_exits_with(parent: int, _worker_id: int) -> None:
    from voxelfm.core.processes import exit_with_parent

    exit_with_parent(parent)


def build_data(config: Mapping[str, Any], *, world_size: int = 1) -> MicroBatchBuilder:
    """Datasets, crop pairs (multi-resolution), augmentations and mask generators of a config."""
    from voxelfm.ssl.config import crop_pairs

    g_sizes, l_sizes, ratios = crop_pairs(config)
    min_side = int(math.ceil(max(max(s) for s in g_sizes) / 2))
    datasets = []
    for i, ds in enumerate(config["datasets"]):
        datasets.append(VolumeDataset(ds["index_path"], min_side=min_side, root=ds.get("root"), name=ds.get("name", f"dataset{i}")))
    crops = config["crops"]
    patch = int(config["student"]["patch_size"])
    pairs = []
    for g, loc in zip(g_sizes, l_sizes, strict=True):
        augs = tuple(
            MultiCropAugmentation(
                global_size=g, local_size=loc, global_scale=tuple(crops["global_crops_scale"]),
                local_scale=tuple(crops["local_crops_scale"]), n_local=int(crops["local_crops_number"]),
                window_probability=float(crops["window_probability"]), flip_probability=float(crops["flip_probability"]),
                permute_axes=bool(crops["axis_permutation"]),
                pixel_range=(float(ds["pixel_range"]["lower"]), float(ds["pixel_range"]["upper"])),
                norm=(float(ds["norm"]["mean"]), float(ds["norm"]["std"])),
            )
            for ds in config["datasets"]
        )
        grid = tuple(s // patch for s in g)
        n = int(np.prod(grid))
        pairs.append(CropPair(g, loc, augs, MaskingGenerator3D(grid, min_num_patches=4, max_num_patches=int(0.5 * n))))
    return MicroBatchBuilder(config, datasets, pairs, ratios, world_size=world_size)
