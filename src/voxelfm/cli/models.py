"""``voxelfm model init|info|presets``: create and inspect model directories."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from voxelfm.cli.common import console, guarded

model_app = typer.Typer(help="Create and inspect backbone model directories.", no_args_is_help=True)


@model_app.command("init")
@guarded
def init(
    out_dir: Annotated[Path, typer.Argument(help="Model directory to write.")],
    preset: Annotated[str, typer.Option("--preset", help="vit-tiny, vit-small, vit-base, vit-large (VoxelFM) or m3d-clip, ct-clip, merlin, radfm (comparators).")] = "vit-tiny",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random initialisation.")] = 0,
    overrides: Annotated[list[str] | None, typer.Option("--set", help="Comparator presets: architecture key=value (repeatable).")] = None,
    max_patches: Annotated[int | None, typer.Option("--max-patches", help="Patch budget of the spec (VoxelFM presets).")] = None,
    spec_file: Annotated[Path | None, typer.Option("--spec", help="Preprocess spec JSON/YAML to ship with the model.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing model directory.")] = False,
) -> None:
    """Write a randomly initialised backbone (the 'random features' baseline)."""
    from voxelfm.cli.convert import parse_overrides
    from voxelfm.core.errors import ConfigError
    from voxelfm.models import PRESETS, build_model, save_model
    from voxelfm.models.backbones import backbone_names, build_backbone, load_spec
    from voxelfm.preprocess import PreprocessSpec

    if (out_dir / "model.safetensors").exists() and not overwrite:
        raise ConfigError(f"{out_dir}: already holds a model (use --overwrite)")
    comparators = [n for n in backbone_names() if n != "voxelfm"]
    if preset not in PRESETS and preset not in comparators:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join([*PRESETS, *comparators])}")
    sets = parse_overrides(overrides)
    if preset in PRESETS:
        if sets:
            raise ConfigError("--set applies to the comparator presets (m3d-clip, ct-clip, merlin, radfm)")
        spec = load_spec(spec_file) if spec_file else PreprocessSpec(patch_size=PRESETS[preset].patch_size)
        if max_patches is not None:
            spec = spec.replace(max_patches=max_patches)
        model = build_model(preset, seed=seed, spec=spec)
    else:
        model = build_backbone(preset, sets, seed=seed)
        spec = load_spec(spec_file) if spec_file else model.default_spec()
    card = {"title": f"{preset} at random initialisation (seed {seed})",
            "description": "Untrained weights: a baseline showing what pretraining adds.",
            "training_data": "None (random initialisation).", "licence": "Apache-2.0",
            "source": f"`voxelfm model init --preset {preset} --seed {seed}`" + (f" with {sets}" if sets else "")}
    model_id = save_model(model, out_dir, spec=spec, card=card)
    console.print(f"wrote {out_dir} ({preset}, seed {seed}, model_id {model_id})", highlight=False)


@model_app.command("info")
@guarded
def info(
    model_dir: Annotated[Path, typer.Argument(help="Model directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Architecture, model id, parameter count and preprocessing spec of a model directory."""
    from voxelfm.models import load_model

    model = load_model(model_dir)
    data = {"path": str(model_dir), "backbone": model.name, "model_id": model.model_id,
            "architecture": model.architecture(), "embed_dim": model.embed_dim,
            "parameters": sum(p.numel() for p in model.parameters()), "spec": model.spec.to_dict(),
            "spec_fingerprint": model.spec.fingerprint()}
    if as_json:
        typer.echo(json.dumps(data))
        return
    from rich.console import Console

    out = Console()
    for key, value in data.items():
        out.print(f"{key:18} {value}", highlight=False, soft_wrap=True)


@model_app.command("presets")
def presets() -> None:
    """List the architecture presets (VoxelFM ViTs, then the comparator backbones)."""
    import torch
    from rich.console import Console
    from rich.table import Table

    from voxelfm.models import PRESETS, VisionTransformer3D

    table = Table(title="presets", title_justify="left")
    for col in ("name", "width", "depth", "heads", "patch", "registers", "parameters"):
        table.add_column(col, justify="right")
    for name, cfg in PRESETS.items():
        with torch.device("meta"):  # shapes only: no memory for vit-large's weights
            n = sum(p.numel() for p in VisionTransformer3D(cfg).parameters())
        table.add_row(name, str(cfg.embed_dim), str(cfg.depth), str(cfg.num_heads), str(cfg.patch_size),
                      str(cfg.num_register_tokens), f"{n:,}")
    Console().print(table)
    from voxelfm.models.backbones import backbone_class, backbone_names

    others = Table(title="comparator presets (voxelfm model init --preset NAME)", title_justify="left")
    for col in ("name", "architecture", "parameters"):
        others.add_column(col)
    for name in backbone_names()[1:]:
        cls = backbone_class(name)
        with torch.device("meta"):
            net = cls(cls.config_class())
        others.add_row(name, net.describe(), f"{sum(p.numel() for p in net.parameters()):,}")
    Console().print(others)


def register(app: typer.Typer) -> None:
    """Add the ``model`` command group to ``app``."""
    app.add_typer(model_app, name="model")
