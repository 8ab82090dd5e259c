"""voxelfm.ssl: self-supervised pretraining of the 3D ViT with DINO + iBOT + KoLeo (docs/original.md §2).

Public API:

* :func:`pretrain(config, overrides=(), out_dir=None) -> Path` — train or resume a run
  (``config`` a YAML path or dict merged over the packaged defaults; ``overrides`` ``key=value``
  strings). Under ``torchrun`` every rank calls it; only rank 0 writes.
* :func:`export(run_dir, out_dir) -> Path` — the teacher backbone (the student when the teacher is
  frozen, as in ``cpu_small``) as a model directory that :func:`voxelfm.models.load_model` and
  ``voxelfm embed`` read.
* :func:`prepare_volumes(inputs, out_dir, settings=PrepareSettings())` — cache CT scans as
  memory-mappable isotropic HU volumes with an ``index.csv``.
* :func:`load_config`, :func:`packaged_config` (``default``, ``cpu_small``, ``cpu_tiny``), :func:`read_metrics`.
* Building blocks: :mod:`~voxelfm.ssl.augment` (``RandomCrop3D``, ``MultiCropAugmentation``),
  :mod:`~voxelfm.ssl.masking` (``MaskingGenerator3D``, ``stratified_masks``),
  :mod:`~voxelfm.ssl.losses` (``DINOLoss``, ``IBOTPatchLoss``, ``KoLeoLoss``, ``sinkhorn_knopp``),
  :mod:`~voxelfm.ssl.schedules`, :mod:`~voxelfm.ssl.param_groups`, :mod:`~voxelfm.ssl.meta_arch`.

Run directory layout: ``config.yaml`` (resolved), ``metrics.jsonl``, ``checkpoints/step_*.pt``,
``tensorboard/`` (when installed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# Imported eagerly (it is light): the function must shadow the submodule of the same name.
from voxelfm.ssl.export import export

if TYPE_CHECKING:
    from voxelfm.ssl.config import load_config, packaged_config
    from voxelfm.ssl.monitor import read_metrics
    from voxelfm.ssl.prepare import PrepareSettings, prepare_volumes
    from voxelfm.ssl.trainer import pretrain

_LAZY = {
    "pretrain": "voxelfm.ssl.trainer",
    "load_config": "voxelfm.ssl.config",
    "packaged_config": "voxelfm.ssl.config",
    "read_metrics": "voxelfm.ssl.monitor",
    "prepare_volumes": "voxelfm.ssl.prepare",
    "PrepareSettings": "voxelfm.ssl.prepare",
}

__all__ = ["PrepareSettings", "export", "load_config", "packaged_config", "prepare_volumes", "pretrain", "read_metrics"]


def __getattr__(name: str) -> Any:
    # Lazy so `import voxelfm.ssl` stays cheap (torch is imported only when training starts).
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'voxelfm.ssl' has no attribute {name!r}")
