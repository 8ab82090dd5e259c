"""Worker for the multi-process defect tests (run under ``torchrun --nproc_per_node=2``, gloo).

``dist_recipe_worker.py ibot_off INDEX RUN_DIR``: two DDP steps with iBOT off and two local crops
(two backbone forwards per micro-batch), lr scaled with the square root of the global batch.
``dist_recipe_worker.py sync INDEX OUT PERIOD``: one step, then rank 1's teacher is perturbed, one
more step; rank 0 writes every rank's teacher checksum after each step to OUT (JSON).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).parent))
from synthetic import tiny_overrides  # noqa: E402

from voxelfm.ssl.config import load_config  # noqa: E402
from voxelfm.ssl.data import build_data  # noqa: E402
from voxelfm.ssl.trainer import Trainer, finish_distributed, pretrain  # noqa: E402


def ibot_off(index: str, run_dir: str) -> None:
    torch.set_num_threads(1)
    pretrain(None, tiny_overrides(Path(index), **{
        "ibot.loss_weight": 0, "crops.local_crops_number": 2, "train.max_steps": 2,
        "optim.scaling_rule": "sqrt", "optim.scaling_batch_size": 2}), out_dir=run_dir)
    finish_distributed(0)


def sync(index: str, out: str, period: int) -> None:
    torch.set_num_threads(1)
    config = load_config(None, tiny_overrides(Path(index), **{"train.max_steps": 2, "train.teacher_sync_period": period}))
    trainer = Trainer(config, Path(out).parent / f"run_sync{period}")
    builder = build_data(config, world_size=trainer.world)
    sums = []
    for step in range(2):
        trainer.train_step(step, [builder.build(step, trainer.rank)])
        gathered: list = [None] * trainer.world
        dist.all_gather_object(gathered, trainer.model.teacher_checksum())
        sums.append(gathered)
        if step == 0 and trainer.rank == 1:  # a rank whose teacher drifted (e.g. non-deterministic kernels)
            with torch.no_grad():
                next(trainer.model.teacher.parameters()).add_(0.5)
    if trainer.rank == 0:
        Path(out).write_text(json.dumps(sums))
    finish_distributed(0)


if __name__ == "__main__":
    if sys.argv[1] == "ibot_off":
        ibot_off(sys.argv[2], sys.argv[3])
    else:
        sync(sys.argv[2], sys.argv[3], int(sys.argv[4]))
