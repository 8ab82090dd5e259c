"""Bad inputs through the batch commands (issue 13): ``voxelfm embed`` and ``voxelfm pretrain prepare``
refuse bad scans with one reason each and store nothing for them, skip label maps with one info
line, and log the warnings of the scans they embed. Also the weights and prepared-volume readers.

Inputs are built with pydicom / nibabel / SimpleITK (``bad_input_builders``); the model is a tiny
random backbone.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from bad_input_builders import body, dicom_series, mha, nifti, set_raw
from typer.testing import CliRunner

from voxelfm.cli.main import app
from voxelfm.core.errors import CheckpointError, DataError, StoreError
from voxelfm.embed import EmbeddingStore
from voxelfm.models import ViTConfig, build_model, save_model
from voxelfm.preprocess import PreprocessSpec

runner = CliRunner()
SHAPE = (30, 56, 56)  # z at 2 mm, y/x at 1 mm: large enough for the background crop and 8-voxel patches


class _Payload:
    """Any object a weights-only unpickler must refuse."""

    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    spec = PreprocessSpec(patch_size=8, max_patches=80)
    model = build_model(ViTConfig(embed_dim=24, depth=1, num_heads=2, patch_size=8, num_register_tokens=1),
                        seed=0, spec=spec)
    folder = tmp_path_factory.mktemp("model") / "model"
    save_model(model, folder, spec=spec)
    return folder


def embed(inputs: list[Path], model: Path, store: Path) -> tuple[int, str]:
    result = runner.invoke(app, ["embed", *map(str, inputs), "--model", str(model), "--out", str(store),
                                 "--workers", "0", "--no-progress", "--device", "cpu"])
    assert "Traceback" not in result.output
    return result.exit_code, " ".join(result.output.split())


def test_embed_refuses_bad_scans_stores_nothing_for_them_and_logs_warnings(tmp_path, model_dir):
    scans = tmp_path / "scans"
    nifti(scans / "good.nii.gz", body(SHAPE), zooms=(1.0, 1.0, 2.0))

    def nan_slope(k, ds):
        if k == 7:
            set_raw(ds, "RescaleSlope", "NaN")

    dicom_series(scans / "nan_dicom", body(SHAPE), spacing=(2.0, 1.0, 1.0), edit=nan_slope)
    flat = np.full(SHAPE, 300.0)
    mha(scans / "flat.mha", flat, spacing=(2.0, 1.0, 1.0))
    mha(scans / "slice.mha", body((1, 56, 56)), spacing=(2.0, 1.0, 1.0))
    store = tmp_path / "store"
    code, text = embed([scans], model_dir, store)
    assert code == 2, text
    reader = EmbeddingStore(store)
    assert reader.ids() == ["flat", "good"]
    assert sorted(reader.ids("failed")) == ["nan_dicom", "slice"]
    failures = {scan_id: r["error"] for scan_id, r in reader.latest().items() if r["status"] == "failed"}
    assert "IM0008: DICOM attribute RescaleSlope is nan" in failures["nan_dicom"]
    assert "is a single 2D slice" in failures["slice"]
    for scan_id in ("nan_dicom", "slice"):
        assert not reader.entry_path(scan_id).exists()
        with pytest.raises(StoreError):
            reader.get(scan_id)
    assert np.all(np.isfinite(reader.get("good").cls))
    assert "flat: constant volume: all 94080 voxels are 300" in text  # embedded, but not silently


def test_embed_and_prepare_skip_a_cohorts_label_maps(tmp_path, model_dir):
    cohort = tmp_path / "cohort"  # the layout `voxelfm phantom` writes
    for i in range(2):
        nifti(cohort / "images" / f"p{i}.nii.gz", body(SHAPE, seed=i), zooms=(1.0, 1.0, 2.0))
        nifti(cohort / "labels" / f"p{i}.nii.gz", (body(SHAPE, seed=i) > 0).astype(np.int16), zooms=(1.0, 1.0, 2.0))
    (cohort / "labels.csv").write_text("scan_id,path,label\np0,images/p0.nii.gz,0\np1,images/p1.nii.gz,1\n")
    code, text = embed([cohort], model_dir, tmp_path / "store")
    assert code == 0, text
    assert EmbeddingStore(tmp_path / "store").ids() == ["p0", "p1"]
    assert "labels: skipped: a label-map folder (2 files), not CT scans" in text
    result = runner.invoke(app, ["pretrain", "prepare", str(cohort), "--out", str(tmp_path / "prepared")])
    output = " ".join(result.output.split())
    assert result.exit_code == 0, output
    assert "label-map folder" in output
    assert sorted(p.name for p in (tmp_path / "prepared").rglob("*.npy")) == ["p0.npy", "p1.npy"]


def test_a_pickle_where_weights_are_expected_is_named(tmp_path, model_dir):
    import shutil

    from voxelfm.models.weights import read_weights_file

    bad_model = tmp_path / "model"
    shutil.copytree(model_dir, bad_model)
    (bad_model / "model.safetensors").write_bytes(pickle.dumps({"w": _Payload()}))
    nifti(tmp_path / "scans" / "good.nii.gz", body(SHAPE), zooms=(1.0, 1.0, 2.0))
    code, text = embed([tmp_path / "scans"], bad_model, tmp_path / "store")
    assert code == 1 and "model.safetensors: not a readable safetensors file: it is a Python pickle" in text
    assert "not a safetensors/weights-only checkpoint" in text
    torch.save({"state": _Payload()}, tmp_path / "weights.pth")
    with pytest.raises(CheckpointError, match=r"weights.pth: not a safetensors/weights-only checkpoint \(a torch.save"):
        read_weights_file(tmp_path / "weights.pth")
    torch.save({"w": torch.zeros(2)}, tmp_path / "plain.pth")
    assert set(read_weights_file(tmp_path / "plain.pth")) == {"w"}


@pytest.mark.parametrize(("make", "expected"), [
    (lambda p: np.save(p, np.array([{"a": 1}] * 8, dtype=object).reshape(2, 2, 2), allow_pickle=True),
     "not a readable prepared volume (ValueError"),
    (lambda p: np.save(p, np.full((2, 2, 2), "x")), "must be a real numeric 3D array, found a numpy array of dtype <U1"),
    (lambda p: np.save(p, np.zeros((4, 4), np.int16)), "must be a 3D array, found shape (4, 4)"),
    (lambda p: p.write_bytes(b"\x93NUMPY garbage"), "not a readable prepared volume"),
])
def test_a_prepared_volume_that_is_not_a_numeric_array_is_named(tmp_path, make, expected):
    from voxelfm.ssl.data import open_volume

    path = tmp_path / "vol.npy"
    make(path)
    with pytest.raises(DataError) as exc:
        open_volume(path)
    message = str(exc.value)
    assert message.startswith(f"{path}: ") and expected in message and "\n" not in message


def test_a_prepared_tensor_file_holding_a_dict_is_named(tmp_path):
    from voxelfm.ssl.data import open_volume

    torch.save({"volume": torch.zeros(2, 2, 2)}, tmp_path / "vol.pt")
    with pytest.raises(DataError, match=r"vol.pt: a prepared volume must be a real numeric 3D array, found a dict"):
        open_volume(tmp_path / "vol.pt")
