"""``import_pth_cache`` refuses a pickle or a truncated ``.pth`` with one line naming the file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from voxelfm.core.errors import StoreError
from voxelfm.embed.store import EmbeddingStore


@pytest.mark.parametrize("kind", ["pickle", "truncated"])
def test_bad_pth_cache_file_is_one_line(tmp_path: Path, kind: str) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    bad = cache / "x.pth"
    if kind == "pickle":
        torch.save({"cls": torch.zeros(1, 4), "patch": Path("/etc/passwd")}, bad)  # weights_only refuses a Path
    else:
        torch.save({"cls": torch.zeros(1, 4), "patch": torch.zeros(1, 1, 1, 4)}, bad)
        bad.write_bytes(bad.read_bytes()[:100])
    with pytest.raises(StoreError) as err:
        EmbeddingStore(tmp_path / "store").import_pth_cache(cache)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{bad}: cannot be read with torch.load(weights_only=True)")
