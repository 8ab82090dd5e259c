"""Worker for the distributed gradient test: one optimizer step, then save the student gradients.

Run as ``python ddp_grad_worker.py INDEX OUT ACCUM`` (one process) or under ``torchrun`` (each rank
builds its own micro-batches; rank 0 saves the all-reduced gradients); ``ddp_grad_worker.py fsdp
INDEX RUN_DIR`` under torchrun trains two FSDP steps.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from synthetic import tiny_overrides  # noqa: E402

from voxelfm.ssl.config import load_config  # noqa: E402
from voxelfm.ssl.data import build_data  # noqa: E402
from voxelfm.ssl.trainer import Trainer, finish_distributed  # noqa: E402


def fsdp(index: str, run_dir: str) -> None:
    """Two steps with ``train.distributed=fsdp`` (checkpoint written by rank 0)."""
    from voxelfm.ssl.trainer import pretrain

    torch.set_num_threads(1)
    pretrain(None, tiny_overrides(Path(index), **{"train.distributed": "fsdp", "train.max_steps": 2}), out_dir=run_dir)
    finish_distributed(0)


def main(index: str, out: str, accum: int) -> None:
    torch.set_num_threads(1)
    config = load_config(None, tiny_overrides(Path(index), **{"train.grad_accum_steps": accum, "train.max_steps": 1}))
    trainer = Trainer(config, Path(out).parent / f"run_{accum}")
    builder = build_data(config, world_size=trainer.world)
    batches = [builder.build(0, a * trainer.world + trainer.rank) for a in range(accum)]
    trainer.train_step(0, batches)
    if trainer.rank == 0:
        grads = {n: p.grad.detach().clone() for n, p in trainer.model.student.named_parameters() if p.grad is not None}
        torch.save(grads, out)
    finish_distributed(0)


if __name__ == "__main__":
    if sys.argv[1] == "fsdp":
        fsdp(sys.argv[2], sys.argv[3])
    else:
        main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
