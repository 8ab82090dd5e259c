"""The demo pretrains on a fixed number of threads on a CPU (the same backbone on any core count:
``small`` two, ``tiny`` one) and leaves a GPU run's threads alone."""

from __future__ import annotations

import torch
from threadpoolctl import threadpool_info

from voxelfm.demo.config import SIZES
from voxelfm.demo.stages.pretrain import training_threads


def test_cpu_pretraining_runs_on_the_configured_threads_and_restores_the_pool() -> None:
    before = torch.get_num_threads()
    for threads in (1, 2):
        with training_threads("cpu", threads):
            assert torch.get_num_threads() == threads
            assert all(pool["num_threads"] <= threads for pool in threadpool_info())
        assert torch.get_num_threads() == before


def test_gpu_pretraining_keeps_the_thread_count() -> None:
    before = torch.get_num_threads()
    with training_threads("cuda", 2):
        assert torch.get_num_threads() == before


def test_sizes_fix_their_pretraining_threads() -> None:
    # small: two threads (1.6x faster per step on 2 idle cores); tiny: one (tests run two at a time)
    assert SIZES["small"].pretrain.threads == 2
    assert SIZES["tiny"].pretrain.threads == 1
