"""Export the backbone of a pretraining run (the EMA teacher, or the student when the teacher is
frozen) as a voxelfm model directory."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from voxelfm.core.errors import CheckpointError, located


def _spec_for(config: dict[str, Any], max_patches: int | None) -> Any:
    """The preprocessing a user must apply to match the pretraining pixels: the dataset's HU range
    and normalisation, and the cached volumes' resampling settings when ``prepare.json`` exists."""
    from voxelfm.preprocess import PreprocessSpec

    ds = config["datasets"][0]
    fields: dict[str, Any] = {
        "patch_size": int(config["student"]["patch_size"]),
        "hu_min": float(ds["pixel_range"]["lower"]), "hu_max": float(ds["pixel_range"]["upper"]),
        "norm_mean": float(ds["norm"]["mean"]), "norm_std": float(ds["norm"]["std"]),
        "max_patches": max_patches,
    }
    index = Path(str(ds.get("index_path", ".")))
    settings_path = (index if index.is_dir() else index.parent) / "prepare.json"
    if settings_path.is_file():
        prep = json.loads(settings_path.read_text(encoding="utf-8"))
        fields["crop_background"] = bool(prep.get("crop_background", False))
        fields["min_spacing_mm"] = float(prep.get("spacing_mm") or prep.get("min_spacing_mm", 0.75))
    return PreprocessSpec(**fields)


def teacher_is_frozen(config: dict[str, Any]) -> bool:
    """True when the momentum schedule is 1 throughout: the teacher keeps its random initial
    weights (a frozen-random-teacher recipe), so the student is the network that learned."""
    m = config["schedules"]["momentum"]
    return all(float(m[k]) >= 1.0 for k in ("start", "peak", "end"))


def default_part(config: dict[str, Any]) -> str:
    """Which backbone :func:`export` writes by default: ``student`` under a frozen teacher, else
    ``teacher`` (the original's choice: the EMA teacher is the better model)."""
    return "student" if teacher_is_frozen(config) else "teacher"


def export(run_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, checkpoint: str | os.PathLike[str] | None = None,
           spec: Any = None, max_patches: int | None = 25000, part: str | None = None) -> Path:
    """Write a backbone of ``run_dir`` (newest checkpoint unless ``checkpoint``) to ``out_dir``
    with :func:`voxelfm.models.save_model`; returns ``out_dir``.

    ``part``: ``"teacher"`` or ``"student"`` (default :func:`default_part`: the teacher, or the
    student when the teacher is frozen). ``spec`` (a :class:`~voxelfm.preprocess.PreprocessSpec`)
    overrides the spec derived from the run's config; ``max_patches`` is the token budget of the
    derived spec.
    """
    from voxelfm.models import VisionTransformer3D, save_model
    from voxelfm.ssl.checkpoint import load_checkpoint, resume_checkpoint, teacher_backbone_state
    from voxelfm.ssl.config import load_config
    from voxelfm.ssl.meta_arch import vit_config

    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise CheckpointError(located(run_dir, "not a pretraining run directory (no config.yaml)"))
    config = load_config(config_path)
    # the newest checkpoint that reads (an unreadable newer one is skipped with a warning)
    found = (Path(checkpoint), None) if checkpoint is not None else resume_checkpoint(run_dir)
    if found is None:
        raise CheckpointError(located(run_dir, "has no checkpoint yet"))
    path, data = found
    part = default_part(config) if part is None else part
    if part not in ("teacher", "student"):
        raise CheckpointError(located(run_dir, f"export part must be teacher|student, got {part!r}"))
    data = load_checkpoint(path) if data is None else data
    if part == "teacher":
        state = teacher_backbone_state(data["model"])
    else:  # no drop path at inference: the student backbone loads into the teacher's architecture
        prefix = "student.backbone."
        state = {k[len(prefix):]: v for k, v in data["model"].items() if k.startswith(prefix)}
    model = VisionTransformer3D(vit_config(config, teacher=True))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(located(path, f"{part} backbone does not match config.yaml (missing {missing[:3]}, unexpected {unexpected[:3]})"))
    model.eval()
    step = int(data["step"])
    card = {
        "title": f"VoxelFM backbone pretrained with DINO + iBOT + KoLeo ({run_dir.name}, step {step})",
        "description": (f"{'Teacher (EMA)' if part == 'teacher' else 'Student'} backbone of the pretraining run "
                        f"`{run_dir}` after {step} optimizer steps."),
        "training_data": ", ".join(str(d.get("index_path")) for d in config["datasets"]),
    }
    save_model(model, out_dir, spec=spec if spec is not None else _spec_for(config, max_patches), card=card)
    return Path(out_dir)
