"""``voxelfm convert-checkpoint CKPT CONFIG OUT_DIR``: import an original VoxelFM checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from voxelfm.cli.common import console, guarded


def register(app: typer.Typer) -> None:
    """Add the ``convert-checkpoint`` command to ``app``."""

    @app.command("convert-checkpoint")
    @guarded
    def convert_checkpoint_cmd(
        checkpoint: Annotated[Path, typer.Argument(help="Original .pth: {'teacher': ...}, a training checkpoint {'model': ...}, or a bare state dict.")],
        config: Annotated[Path, typer.Argument(help="The run's config.yaml (student.*, datasets[0].norm).")],
        out_dir: Annotated[Path, typer.Argument(help="Model directory to write.")],
        max_patches: Annotated[int, typer.Option("--max-patches", help="Patch budget of the spec (paper: 25000).")] = 25000,
    ) -> None:
        """Convert the teacher backbone into a model directory (safetensors + config + spec + card)."""
        from voxelfm.models import convert_checkpoint

        model = convert_checkpoint(checkpoint, config, out_dir, max_patches=max_patches)
        cfg = model.config
        console.print(f"wrote {out_dir}: {cfg.embed_dim} wide, {cfg.depth} blocks, {cfg.num_heads} heads, "
                      f"patch {cfg.patch_size}, {cfg.num_register_tokens} registers; model_id {model.model_id}",
                      highlight=False)
