"""Original-checkpoint readers refuse pickles and truncated files with one line naming the file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from voxelfm.core.errors import CheckpointError
from voxelfm.models.backbones.convert import read_checkpoint
from voxelfm.models.convert import load_original_checkpoint
from voxelfm.models.weights import read_weights_file


def _bad(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.pth"
    if kind == "pickle":
        torch.save({"teacher": {"w": torch.zeros(2)}, "extra": Path("/etc/passwd")}, path)
    else:
        torch.save({"teacher": {"w": torch.zeros(64)}}, path)
        path.write_bytes(path.read_bytes()[:100])
    return path


@pytest.mark.parametrize("reader", [read_checkpoint, load_original_checkpoint, read_weights_file])
@pytest.mark.parametrize("kind", ["pickle", "truncated"])
def test_bad_checkpoint_is_one_line_naming_the_file(tmp_path: Path, reader, kind: str) -> None:
    path = _bad(tmp_path, kind)
    with pytest.raises(CheckpointError) as err:
        reader(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    assert "weights_only=True" in message
