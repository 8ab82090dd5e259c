"""``voxelfm convert-checkpoint SRC [CONFIG] OUT``: import released weights as a voxelfm model directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from voxelfm.cli.common import console, guarded


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["key=value", ...]`` → dict of YAML-typed values (checked by the backbone's config class)."""
    from voxelfm.core.config_check import parse_assignment

    out: dict[str, Any] = {}
    for item in items or []:
        parts, value = parse_assignment(item, example="embed_dim=768")
        out[".".join(parts)] = value
    return out


def register(app: typer.Typer) -> None:
    """Add the ``convert-checkpoint`` command to ``app``."""

    @app.command("convert-checkpoint")
    @guarded
    def convert_checkpoint_cmd(
        paths: Annotated[list[Path], typer.Argument(
            help="SRC OUT, or SRC CONFIG OUT for an original VoxelFM checkpoint with its run's config.yaml.",
            show_default=False)],
        source: Annotated[str | None, typer.Option(
            "--from", help="voxelfm, m3d, ct-clip, merlin or radfm (default: detected from the keys).")] = None,
        overrides: Annotated[list[str] | None, typer.Option(
            "--set", help="Architecture hyper-parameter key=value, named as in the original constructor (repeatable).")] = None,
        config: Annotated[Path | None, typer.Option("--config", help="config.yaml of a VoxelFM run (instead of the middle argument).")] = None,
        max_patches: Annotated[int, typer.Option("--max-patches", help="VoxelFM only: patch budget of the spec (paper: 25000).")] = 25000,
    ) -> None:
        """Convert released weights (VoxelFM, M3D-CLIP, CT-CLIP, Merlin, RadFM) into a model directory.

        Files are read with torch.load(weights_only=True); only the image encoder is kept. The
        directory holds safetensors, config.json, the preprocessing spec and a model card stating
        the weights' licence.
        """
        from voxelfm.core.errors import ConfigError
        from voxelfm.models import convert_checkpoint
        from voxelfm.models.backbones.convert import (
            convert_native_checkpoint,
            read_checkpoint,
            resolve_source,
        )

        if len(paths) == 3:
            src, config, out_dir = paths[0], config or paths[1], paths[2]
        elif len(paths) == 2:
            src, out_dir = paths
        else:
            raise ConfigError("give SRC OUT (or SRC CONFIG OUT for a VoxelFM checkpoint)")
        sets = parse_overrides(overrides)
        if config is not None and source in (None, "voxelfm"):
            name = "voxelfm"
        else:
            obj = read_checkpoint(src)
            name = resolve_source(source, obj, src)
        if name == "voxelfm":
            if config is None:
                raise ConfigError(f"{src}: a VoxelFM checkpoint needs its run's config.yaml (SRC CONFIG OUT or --config)")
            if sets:
                raise ConfigError("--set applies to comparator models; a VoxelFM architecture comes from config.yaml")
            model = convert_checkpoint(src, config, out_dir, max_patches=max_patches)
        else:
            model = convert_native_checkpoint(src, out_dir, source=name, overrides=sets, obj=obj)
        n = sum(p.numel() for p in model.parameters())
        console.print(f"wrote {out_dir}: {model.name}, {n:,} parameters, {model.embed_dim}-d features; "
                      f"model_id {model.model_id}", highlight=False)
