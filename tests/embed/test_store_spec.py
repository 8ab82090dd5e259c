"""Features carry their spec object and its fingerprint (taken once, where they are made) into the
store, which keeps the spec's dict and fingerprint and reads the object back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_embedding_store import _features

from conftest import SPEC, phantom
from voxelfm.embed import EmbeddingStore, extract_features
from voxelfm.embed.shards import compact


def test_the_spec_object_and_its_fingerprint_travel_from_extraction_to_records(
        model, tmp_path: Path, monkeypatch) -> None:
    feats = extract_features(model, phantom(0))
    assert feats.spec == SPEC and feats.spec_fingerprint == SPEC.fingerprint()

    def refuse(self):  # noqa: ANN001, ANN202 - the store must not take the fingerprint again
        raise AssertionError("fingerprint taken again")

    monkeypatch.setattr(type(SPEC), "fingerprint", refuse)
    store = EmbeddingStore(tmp_path / "s")
    record = store.write("a", feats)
    assert record["spec_fingerprint"] == feats.spec_fingerprint
    back = store.get("a")
    assert back.spec == SPEC and back.spec_fingerprint == feats.spec_fingerprint
    monkeypatch.undo()
    assert store.done(model.model_id, SPEC.fingerprint()) == {"a"}
    meta_spec = json.loads(_metadata(store.entry_path("a"))["spec"])
    assert meta_spec == SPEC.to_dict()  # the on-disk form is the spec's dict, as before
    compact(tmp_path / "s")
    again = EmbeddingStore(tmp_path / "s").get("a")
    assert again.spec == SPEC and again.spec_fingerprint == SPEC.fingerprint()
    np.testing.assert_array_equal(again.cls, feats.cls)


def _metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as handle:
        return dict(handle.metadata() or {})


def test_hand_built_features_get_the_fingerprint_of_their_spec(tmp_path: Path) -> None:
    feats = _features(0)
    assert feats.spec_fingerprint is None
    store = EmbeddingStore(tmp_path / "s")
    record = store.write("a", feats)
    assert record["spec_fingerprint"] == feats.spec.fingerprint()
    back = store.get("a")
    assert back.spec == feats.spec and back.spec_fingerprint == record["spec_fingerprint"]
    # older callers gave the spec as its dict: stored the same way, read back as the object
    feats.spec = feats.spec.to_dict()
    assert store.write("b", feats)["spec_fingerprint"] == record["spec_fingerprint"]
    assert store.get("b").spec == back.spec


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
    assert record["spec_fingerprint"] == (fingerprint or feats.spec.fingerprint())
