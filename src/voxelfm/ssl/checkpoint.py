"""Atomic, rotating training checkpoints: ``RUN/checkpoints/step_0000100.pt``.

A checkpoint holds the completed step count, the meta-model state (student, teacher, centres) and
the optimizer state. Data order, crops, masks and drop-path draws are functions of (seed, step,
micro-batch), so no RNG state is needed to continue the exact trajectory.

A run killed while saving leaves a hidden ``.step_*.pt.tmp-<pid>`` beside the checkpoints; those of
writers that no longer run are removed (:func:`clean_partial_checkpoints`, at every save and on
resume). A newest checkpoint that cannot be read (truncated by a full disk or a bad copy) does not
block a resume: :func:`resume_checkpoint` warns and falls back to the newest intact one.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import torch

from voxelfm.core.atomic import atomic_save
from voxelfm.core.errors import CheckpointError, located
from voxelfm.core.processes import pid_alive

log = logging.getLogger(__name__)
_NAME = re.compile(r"^step_(\d{7,})\.pt$")
_PARTIAL = re.compile(r"^\.step_\d{7,}\.pt\.tmp-(\d+)$")  # voxelfm.core.atomic's temporary name


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every checkpoint of a run, oldest first."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _NAME.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def clean_partial_checkpoints(run_dir: Path) -> list[Path]:
    """Remove half-written checkpoint files whose writer process no longer runs; returns them."""
    folder = checkpoint_dir(run_dir)
    removed = []
    if folder.is_dir():
        for path in folder.iterdir():
            match = _PARTIAL.match(path.name)
            if match and int(match.group(1)) != os.getpid() and not pid_alive(int(match.group(1))):
                path.unlink(missing_ok=True)
                removed.append(path)
    if removed:
        log.info("removed %d half-written checkpoint file(s) of an interrupted run in %s", len(removed), folder)
    return removed


def resume_checkpoint(run_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """``(path, data)`` of the newest checkpoint that loads; ``None`` when the run has none.

    An unreadable newer checkpoint is skipped with a warning naming it; if none loads, the
    :class:`CheckpointError` names every one tried.
    """
    found = list_checkpoints(run_dir)
    problems = []
    for _, path in reversed(found):
        try:
            data = load_checkpoint(path)
        except CheckpointError as exc:
            problems.append(str(exc))
            log.warning("%s; trying an older checkpoint", exc)
            continue
        if problems:
            log.warning("resuming from %s: %d newer checkpoint(s) could not be read", path.name, len(problems))
        return path, data
    if problems:
        raise CheckpointError(located(checkpoint_dir(run_dir), "no checkpoint can be read: " + "; ".join(problems)))
    return None


def save_checkpoint(run_dir: Path, step: int, state: dict[str, Any], *, max_to_keep: int, keep_every: int | None) -> Path:
    """Write ``step_<step>.pt`` atomically, then delete the oldest beyond ``max_to_keep``
    (checkpoints at multiples of ``keep_every`` are never deleted) and leftovers of killed saves."""
    clean_partial_checkpoints(run_dir)
    path = checkpoint_dir(run_dir) / f"step_{step:07d}.pt"
    atomic_save(path, lambda tmp: torch.save({"step": step, **state}, tmp))
    rotating = [(s, p) for s, p in list_checkpoints(run_dir) if not (keep_every and s > 0 and s % keep_every == 0)]
    for _, old in rotating[: max(0, len(rotating) - max(1, max_to_keep))]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint on CPU with ``weights_only=True``; errors name the file."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        raise CheckpointError(located(path, f"unreadable checkpoint ({exc})")) from None
    if not isinstance(data, dict) or "model" not in data or "step" not in data:
        raise CheckpointError(located(path, "not a voxelfm pretraining checkpoint (no 'model'/'step')"))
    return data


def teacher_backbone_state(model_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ``teacher.backbone.*`` entries of a meta-model state dict, prefix removed."""
    prefix = "teacher.backbone."
    return {k[len(prefix) :]: v for k, v in model_state.items() if k.startswith(prefix)}
