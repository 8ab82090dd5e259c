"""Checkpoints after a crash (issue 13): half-written files are removed, and a truncated newest
checkpoint falls back to the newest intact one with a warning instead of blocking the resume."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from synthetic import make_prepared, single_thread, tiny_overrides  # noqa: E402

from voxelfm.core.errors import CheckpointError  # noqa: E402
from voxelfm.ssl import load_config  # noqa: E402
from voxelfm.ssl.checkpoint import (  # noqa: E402
    checkpoint_dir,
    clean_partial_checkpoints,
    list_checkpoints,
    resume_checkpoint,
    save_checkpoint,
)
from voxelfm.ssl.trainer import Trainer  # noqa: E402


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def _state(value: float) -> dict:
    return {"model": {"w": torch.full((3,), value)}, "optimizer": {}}


def test_half_written_checkpoints_of_dead_writers_are_removed(tmp_path: Path) -> None:
    folder = checkpoint_dir(tmp_path)
    folder.mkdir(parents=True)
    dead = folder / f".step_0000010.pt.tmp-{_dead_pid()}"
    dead.write_bytes(b"half a checkpoint")
    alive = folder / ".step_0000010.pt.tmp-1"  # pid 1 runs: maybe a save in progress, left alone
    alive.write_bytes(b"being written")
    assert clean_partial_checkpoints(tmp_path) == [dead]
    assert not dead.exists() and alive.exists()
    dead.write_bytes(b"again")
    save_checkpoint(tmp_path, 20, _state(1.0), max_to_keep=2, keep_every=None)  # every save cleans too
    assert not dead.exists() and [s for s, _ in list_checkpoints(tmp_path)] == [20]


def test_a_truncated_newest_checkpoint_falls_back_to_the_newest_intact_one(tmp_path: Path, caplog) -> None:
    for step in (10, 20, 30):
        save_checkpoint(tmp_path, step, _state(float(step)), max_to_keep=3, keep_every=None)
    newest = list_checkpoints(tmp_path)[-1][1]
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # a full disk, a bad copy
    with caplog.at_level(logging.WARNING, logger="voxelfm.ssl.checkpoint"):
        path, data = resume_checkpoint(tmp_path)
    assert path.name == "step_0000020.pt" and data["step"] == 20
    assert torch.equal(data["model"]["w"], torch.full((3,), 20.0))
    assert "step_0000030.pt" in caplog.text and "unreadable checkpoint" in caplog.text
    for _, p in list_checkpoints(tmp_path):
        p.write_bytes(b"")
    with pytest.raises(CheckpointError, match="no checkpoint can be read"):
        resume_checkpoint(tmp_path)
    assert resume_checkpoint(tmp_path / "empty") is None


def test_training_resumes_past_a_truncated_checkpoint(tmp_path: Path) -> None:
    index = make_prepared(tmp_path / "prepared", n=4)
    config = load_config(None, tiny_overrides(index, **{"train.max_steps": 4, "checkpointing.period": 2,
                                                        "checkpointing.max_to_keep": 3}))
    with single_thread():
        Trainer(config, tmp_path / "run").fit(stop_at_step=4)
        assert [s for s, _ in list_checkpoints(tmp_path / "run")] == [2, 4]
        newest = list_checkpoints(tmp_path / "run")[-1][1]
        newest.write_bytes(newest.read_bytes()[:1000])
        (checkpoint_dir(tmp_path / "run") / f".step_0000006.pt.tmp-{_dead_pid()}").write_bytes(b"x")
        trainer = Trainer(config, tmp_path / "run")
    assert trainer.start_step == 2
    assert not list(checkpoint_dir(tmp_path / "run").glob(".*.tmp-*"))


def test_export_skips_an_unreadable_newest_checkpoint(tmp_path: Path) -> None:
    from voxelfm.ssl import export

    index = make_prepared(tmp_path / "prepared", n=4)
    config = load_config(None, tiny_overrides(index, **{"train.max_steps": 4, "checkpointing.period": 2}))
    with single_thread():
        Trainer(config, tmp_path / "run").fit()
    newest = list_checkpoints(tmp_path / "run")[-1][1]
    newest.write_bytes(b"")
    out = export(tmp_path / "run", tmp_path / "model", max_patches=64)
    assert (out / "model.safetensors").is_file()
