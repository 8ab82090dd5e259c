"""Stage 2: pretrain a small backbone on the cohort, export it, and save its random-init twin.

1. :func:`voxelfm.ssl.prepare_volumes` caches the *training-split* scans as isotropic HU volumes
   (validation and test scans are never seen by pretraining, so the probes' test scans stay unseen);
2. :func:`voxelfm.ssl.pretrain` runs the packaged single-machine recipe
   (``recipe``) for exactly ``max_steps`` steps (no wall-clock cap: the backbone, and every number
   downstream of it, must not depend on how busy the machine was);
3. :func:`voxelfm.ssl.export` writes the recipe's backbone as a model directory (the student for
   ``cpu_small``, whose teacher stays frozen at random init);
4. the baseline is the same architecture at random initialisation (``voxelfm.models.build_model``),
   saved with the same preprocessing spec, so both backbones see exactly the same pixels.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from voxelfm.core.stages import CheckResult, Stage
from voxelfm.demo import layout
from voxelfm.demo.config import DemoContext


def demo_spec(ctx: DemoContext) -> Any:
    """Preprocessing of both demo backbones: the original pipeline with the demo's token budget."""
    from voxelfm.models import PRESETS
    from voxelfm.preprocess import PreprocessSpec

    preset = PRESETS[ctx.config.pretrain.preset]
    return PreprocessSpec(patch_size=preset.patch_size, max_patches=ctx.config.pretrain.max_patches)


def training_threads(device: str, threads: int) -> contextlib.AbstractContextManager[None]:
    """Exactly ``threads`` torch/BLAS threads for pretraining on a CPU, the default elsewhere.

    A fixed count, not one per core, so the backbone (and every number downstream of it) does not
    depend on the machine's core count. ``small`` uses two: on 2 idle cores ``cpu_small`` ran 0.60-0.71
    s/step with two threads against 1.02-1.06 with one (benchmarks/README.md, "Two threads for the
    demo's pretraining"). ``tiny`` keeps one: the tests run two at a time, and threads beyond the free
    cores wait for each other (the CLI makes waiting threads sleep, ``voxelfm.cli.main``).
    """
    from voxelfm.core.parallel import fixed_threads

    return fixed_threads(threads) if device == "cpu" else contextlib.nullcontext()


class PretrainStage(Stage):
    name = "pretrain"
    title = "Pretrain a backbone (self-supervised) and save its random-init twin"
    inputs = ("cohort",)
    config_parts = ("pretrain",)

    def outputs(self, ctx: DemoContext) -> list[Path]:
        return [layout.pretrain_run_dir(ctx.out)] + [layout.model_dir(ctx.out, b) for b in layout.MODEL_BACKBONES]

    def run(self, ctx: DemoContext) -> dict[str, Any]:
        import pandas as pd

        from voxelfm.models import build_model, read_model_config, save_model
        from voxelfm.ssl import (
            PrepareSettings,
            export,
            packaged_config,
            prepare_volumes,
            pretrain,
            read_metrics,
        )

        cfg = ctx.config.pretrain
        cohort = layout.cohort_dir(ctx.out)
        labels = pd.read_csv(cohort / "labels.csv")
        train_paths = [cohort / str(p) for p in labels.loc[labels["split"] == "train", "path"]]
        data_dir = layout.pretrain_run_dir(ctx.out) / "data"
        run_dir = layout.pretrain_run_dir(ctx.out) / "run"
        ctx.console.print(f"  caching {len(train_paths)} training scans at {cfg.spacing_mm} mm for pretraining")
        counts = prepare_volumes(train_paths, data_dir,
                                 settings=PrepareSettings(crop_background=True, spacing_mm=cfg.spacing_mm))
        overrides = [
            f"student.arch={cfg.preset}",
            f"datasets.0.index_path={data_dir / 'index.csv'}",
            f"train.max_steps={cfg.max_steps}",
            f"train.seed={cfg.seed}",
            f"train.device={ctx.device}",
            "train.max_minutes=null",
            *cfg.overrides,
        ]
        with training_threads(ctx.device, cfg.threads):
            pretrain(packaged_config(cfg.recipe), overrides, out_dir=run_dir)
        spec = demo_spec(ctx)
        pre_dir = layout.model_dir(ctx.out, "pretrained")
        export(run_dir, pre_dir, spec=spec)
        architecture = read_model_config(pre_dir)["architecture"]
        random_model = build_model(architecture, seed=cfg.seed, spec=spec)
        save_model(random_model, layout.model_dir(ctx.out, "random"), spec=spec, card={
            "title": "Random-initialisation baseline (voxelfm demo)",
            "description": "The demo backbone's architecture with its initial random weights: the "
                           "baseline that shows what pretraining adds.",
            "training_data": "none",
        })
        metrics = read_metrics(run_dir)
        last = metrics[-1] if metrics else {}
        return {"prepared": counts, "steps": last.get("step"), "planned_steps": cfg.max_steps,
                "final_loss": last.get("total_loss"),
                "pretrained_model_id": read_model_config(pre_dir)["model_id"]}

    def check(self, ctx: DemoContext) -> CheckResult:
        return check_models(ctx)


def check_models(ctx: DemoContext) -> CheckResult:
    """Both model directories load, share architecture and spec, and hold different weights."""
    import torch

    from voxelfm.core.errors import VoxelFMError
    from voxelfm.models import load_model

    res = CheckResult()
    models = {}
    for backbone in layout.MODEL_BACKBONES:
        path = layout.model_dir(ctx.out, backbone)
        try:
            models[backbone] = load_model(path, device="cpu")
        except (VoxelFMError, OSError, ValueError, json.JSONDecodeError) as exc:
            res.problems.append(f"{path}: does not load ({exc})")
    if len(models) < 2:
        return res
    pre, rnd = models["pretrained"], models["random"]
    res.require(pre.config == rnd.config, "pretrained and random backbones differ in architecture")
    res.require(pre.spec == rnd.spec, "pretrained and random backbones differ in preprocessing spec")
    res.require(pre.spec == demo_spec(ctx), "backbone spec differs from the demo's preprocessing spec")
    res.require(pre.model_id != rnd.model_id, "pretrained and random backbones share a model id")
    same = all(torch.equal(a, b) for a, b in zip(pre.state_dict().values(), rnd.state_dict().values(), strict=True))
    res.require(not same, "pretrained weights equal the random initialisation (pretraining did nothing)")
    return res
