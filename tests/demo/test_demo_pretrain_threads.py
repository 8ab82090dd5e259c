"""The demo pretrains on one thread on a CPU (same backbone on any core count) and leaves a GPU
run's threads alone."""

from __future__ import annotations

import torch

from voxelfm.demo.stages.pretrain import training_threads


def test_cpu_pretraining_runs_on_one_thread_and_restores_the_pool() -> None:
    before = torch.get_num_threads()
    with training_threads("cpu"):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_gpu_pretraining_keeps_the_thread_count() -> None:
    before = torch.get_num_threads()
    with training_threads("cuda"):
        assert torch.get_num_threads() == before
