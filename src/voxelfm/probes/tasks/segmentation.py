"""Segmentation probe: patch grid → 3D conv decoder → voxel logits (docs/original.md §4.7).

Training happens on a coarse target grid (the preprocessed input grid downsampled by
``target_downsample``) so it stays fast on CPU. Label maps (any geometry; ``label_path`` column,
relative to the labels CSV or ``label_root``) are mapped onto that grid with nearest-neighbour
sampling in world space. Validation Dice (model selection) is computed on the coarse grid; **test
Dice is computed in each label map's original geometry** after mapping the prediction back, and
the predicted masks are written as NIfTI in that geometry.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from voxelfm.core.errors import DataError, located
from voxelfm.core.geometry import Geometry
from voxelfm.metrics.segmentation import aggregate_dice, dice_per_class
from voxelfm.probes.config import ProbeConfig
from voxelfm.probes.data import ProbeData
from voxelfm.probes.tasks.common import TaskOutput, base_predictions, make_head
from voxelfm.probes.trainer import train

log = logging.getLogger(__name__)


@dataclass
class _Scan:
    grid: torch.Tensor  # (d, h, w, C)
    target: torch.Tensor  # (D', H', W') int64 labels on the coarse grid
    coarse: Geometry
    label_geometry: Geometry
    label_path: Path


def coarse_geometry(input_geometry: Geometry, factor: int) -> Geometry:
    """The input grid downsampled by ``factor`` (block centres), at least one voxel per axis."""
    f = max(1, int(factor))
    shape = tuple(max(1, s // f) for s in input_geometry.shape)
    return input_geometry.subgrid(((f - 1) / 2,) * 3, (f,) * 3, shape)


def _resolve(path_value: str, data: ProbeData, config: ProbeConfig) -> Path:
    p = Path(str(path_value))
    if p.is_absolute():
        return p
    if config.label_root:
        return Path(config.label_root) / p
    source = data.labels.attrs.get("source")
    if source and os.path.isfile(source):
        return Path(source).parent / p
    return p


def _load_scans(data: ProbeData, config: ProbeConfig, rows: np.ndarray) -> list[_Scan]:
    from voxelfm.io import load_label_map
    from voxelfm.preprocess import resample_to_geometry

    grids = data.features.require_patches("segmentation")
    scans = []
    for r in rows:
        sid = data.ids[r]
        ig = data.features.input_geometry[r]
        if ig is None:
            raise DataError(located(data.features.name, f"{sid}: features lack input geometry; cannot map labels"))
        path = _resolve(data.labels.iloc[r][config.label_path_column], data, config)
        labels, geom = load_label_map(path)
        coarse = coarse_geometry(ig, config.target_downsample)
        target = resample_to_geometry(labels, geom, coarse, nearest=True)
        scans.append(_Scan(torch.from_numpy(np.ascontiguousarray(grids[r], dtype=np.float32)),
                           torch.from_numpy(target.astype(np.int64)), coarse, geom, path))
    return scans


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - mean soft Dice over foreground classes present in prediction or target."""
    prob = torch.softmax(logits, 1)[:, 1:]
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 4, 1, 2, 3).to(prob.dtype)[:, 1:]
    dims = (0, 2, 3, 4)
    inter = (prob * onehot).sum(dims)
    denom = prob.sum(dims) + onehot.sum(dims)
    return 1.0 - ((2 * inter + 1e-6) / (denom + 1e-6)).mean()


def fit(data: ProbeData, targets: list[str], config: ProbeConfig) -> TaskOutput:
    """Train the decoder on train, select on validation macro Dice, evaluate and map masks on test."""
    tr, va, te = data.rows("train"), data.rows("val"), data.rows("test")
    train_scans = _load_scans(data, config, tr)
    val_scans = _load_scans(data, config, va)
    test_scans = _load_scans(data, config, te)
    max_label = max(int(s.target.max()) for s in train_scans)
    k = config.num_classes or max(max_label, *(int(s.target.max()) for s in val_scans + test_scans)) + 1
    if max_label < 1:
        raise DataError(located(data.labels.attrs.get("source", "labels"),
                                "no foreground label survives on the coarse training grid; lower target_downsample"))
    names = config.class_names or [f"class{i}" for i in range(1, k)]
    if len(names) != k - 1:
        raise DataError(f"{len(names)} class names for {k - 1} foreground classes")
    params = {"hidden_dim": 64, "num_steps": 3, **config.head_params}
    model, spec = make_head("decoder", data.features.dim, k, params, seed=config.train.seed)

    def batches(rng):
        perm = rng.permutation(len(train_scans))
        for s in range(0, len(perm), config.train.batch_size):
            chosen = [train_scans[i] for i in perm[s : s + config.train.batch_size]]
            yield {"x": [c.grid for c in chosen], "y": [c.target for c in chosen]}

    def loss_fn(m, batch):
        # Scans may differ in grid and target size: scans of equal shapes share one forward pass,
        # and the batch loss is the scan-weighted mean over those groups.
        groups: dict[tuple, list[int]] = {}
        for i, (x, y) in enumerate(zip(batch["x"], batch["y"], strict=True)):
            groups.setdefault((tuple(x.shape), tuple(y.shape)), []).append(i)
        total = 0.0
        for (_, y_shape), members in groups.items():
            x = torch.stack([batch["x"][i] for i in members])
            y = torch.stack([batch["y"][i] for i in members])
            logits = m(x, target_shape=y_shape)
            loss = F.cross_entropy(logits, y)
            if config.dice_loss:
                loss = loss + soft_dice_loss(logits, y)
            total = total + loss * len(members)
        return total / len(batch["x"])

    def predict_scan(m, scan: _Scan) -> np.ndarray:
        with torch.no_grad():
            logits = m(scan.grid.unsqueeze(0), target_shape=tuple(scan.target.shape))
        return logits[0].argmax(0).numpy().astype(np.int16)

    def validate(m):
        dice, counts = zip(*(dice_per_class(predict_scan(m, s), s.target.numpy(), k) for s in val_scans), strict=True)
        try:
            return {"dice_macro": aggregate_dice(np.array(dice), np.array(counts))["dice_macro"]}
        except ValueError:
            return {"dice_macro": float("nan")}

    result = train(model, batches=batches, loss_fn=loss_fn, validate=validate, monitor="dice_macro", mode="max",
                   config=config.train)
    from voxelfm.io import load_label_map
    from voxelfm.preprocess import resample_to_geometry

    dices, counts, masks = [], [], []
    for sid, scan in zip((data.ids[r] for r in te), test_scans, strict=True):
        coarse_pred = predict_scan(result.model, scan)
        pred = resample_to_geometry(coarse_pred, scan.coarse, scan.label_geometry, nearest=True)
        truth, _ = load_label_map(scan.label_path)
        d, c = dice_per_class(pred, truth, k)
        dices.append(d)
        counts.append(c)
        if config.write_masks:
            masks.append((sid, pred.astype(np.int16), scan.label_geometry))
    dice_arr, count_arr = np.array(dices), np.array(counts)
    preds = base_predictions(data, te)
    for j, name in enumerate(names):
        preds[f"dice_{name}"] = dice_arr[:, j]
    return TaskOutput(
        predictions=preds, metric_fn=lambda d, c: aggregate_dice(d, c, names), eval_ids=[data.ids[r] for r in te],
        eval_arrays=(dice_arr, count_arr), history=[{"probe": "decoder", **h} for h in result.history],
        states={"decoder": result.model.state_dict()}, head_specs={"decoder": spec},
        extras={"masks": masks, "num_classes": k, "class_names": names},
    )


def write_masks(masks: list[tuple[str, np.ndarray, Geometry]], directory: str | os.PathLike[str]) -> list[Path]:
    """Write predicted label maps as ``<scan_id>_pred.nii.gz`` in their original geometry."""
    from voxelfm.io import write_nifti

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    return [write_nifti(mask, geometry, out / f"{sid}_pred.nii.gz") for sid, mask, geometry in masks]


def mask_examples(result: Any, *, n: int) -> list[dict[str, Any]]:
    """Up to ``n`` test scans of a written segmentation run (``result.out_dir``) whose predicted mask
    is on disk (:func:`write_masks`), each with its path (``prediction``) and its macro Dice over
    the classes it scores (``None`` when none)."""
    masks_dir = Path(result.out_dir) / "masks"
    dice, _counts = result.output.eval_arrays
    out: list[dict[str, Any]] = []
    for i, scan_id in enumerate(result.output.eval_ids):
        mask = masks_dir / f"{scan_id}_pred.nii.gz"
        if len(out) >= n:
            break
        if mask.is_file():
            finite = dice[i][np.isfinite(dice[i])]
            out.append({"scan_id": str(scan_id), "prediction": mask,
                        "dice": float(finite.mean()) if finite.size else None})
    return out


__all__ = ["coarse_geometry", "fit", "mask_examples", "soft_dice_loss", "write_masks"]
