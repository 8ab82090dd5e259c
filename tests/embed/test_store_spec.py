"""The spec fingerprint is taken once, from the typed spec, and carried unchanged into the store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_embedding_store import _features

import voxelfm.models.backbones.spec as spec_module
from conftest import SPEC, phantom
from voxelfm.embed import EmbeddingStore, extract_features
from voxelfm.embed.shards import compact


def test_fingerprint_travels_from_extraction_to_records_without_rebuilding_the_spec(
        model, tmp_path: Path, monkeypatch) -> None:
    feats = extract_features(model, phantom(0))
    assert feats.spec == SPEC.to_dict() and feats.spec_fingerprint == SPEC.fingerprint()

    def refuse(data):  # the store must not turn the dict back into a spec object
        raise AssertionError("spec rebuilt from its dict")

    monkeypatch.setattr(spec_module, "spec_from_dict", refuse)
    store = EmbeddingStore(tmp_path / "s")
    record = store.write("a", feats)
    assert record["spec_fingerprint"] == SPEC.fingerprint()
    assert store.done(model.model_id, SPEC.fingerprint()) == {"a"}
    back = store.get("a")
    assert back.spec == SPEC.to_dict() and back.spec_fingerprint == SPEC.fingerprint()
    monkeypatch.undo()
    compact(tmp_path / "s")
    again = EmbeddingStore(tmp_path / "s").get("a")
    assert again.spec == SPEC.to_dict() and again.spec_fingerprint == SPEC.fingerprint()
    np.testing.assert_array_equal(again.cls, feats.cls)


def test_hand_built_features_get_the_fingerprint_of_their_spec_dict(tmp_path: Path) -> None:
    from voxelfm.models.backbones.spec import spec_from_dict

    feats = _features(0)  # spec given as a dict only, as older callers do
    assert feats.spec_fingerprint is None
    store = EmbeddingStore(tmp_path / "s")
    record = store.write("a", feats)
    assert record["spec_fingerprint"] == spec_from_dict(feats.spec).fingerprint()
    assert store.get("a").spec_fingerprint == record["spec_fingerprint"]


def test_entries_of_older_stores_still_read(tmp_path: Path) -> None:
    """Metadata as written before the fingerprint travelled: no spec at all reads as ``None``."""
    from safetensors.numpy import save_file

    store = EmbeddingStore(tmp_path / "s")
    feats = _features(1)
    store.write("a", feats)
    path = store.entry_path("a")
    meta = {"scan_id": "a", "model_id": "m1", "spec": json.dumps({}), "spec_fingerprint": "None",
            "patch_geometry": "", "input_geometry": "", "mode": "3d"}
    save_file({"cls": feats.cls, "patch": feats.patch, "registers": feats.registers}, str(path), metadata=meta)
    back = store.get("a")
    assert not back.spec and back.spec_fingerprint is None
    np.testing.assert_array_equal(back.cls, feats.cls)


@pytest.mark.parametrize("fingerprint", ["abc123def456", None])
def test_records_keep_a_given_fingerprint(tmp_path: Path, fingerprint: str | None) -> None:
    feats = _features(2)
    feats.spec_fingerprint = fingerprint
    record = EmbeddingStore(tmp_path / "s").write("a", feats)
    assert record["spec_fingerprint"] == (fingerprint or spec_module.spec_from_dict(feats.spec).fingerprint())
