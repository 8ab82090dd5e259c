"""The generated scan: tissue HU, label alignment, findings where the labels say, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from voxelfm.data.phantom import (
    FINDINGS,
    LABEL_IDS,
    LOCALISATION_COLUMNS,
    REGRESSION_TARGETS,
    SEGMENTATION_LABELS,
    generate_scan,
)

ALL_OFF = dict.fromkeys(FINDINGS, 0)


@pytest.fixture(scope="module")
def small_scan():
    return generate_scan(2, seed=3, size="small", findings={**ALL_OFF, "lung_nodule": 1})


@pytest.fixture(scope="module")
def baseline():
    return generate_scan(4, seed=1, size="tiny", findings=ALL_OFF)


def _median(scan, name: str) -> float:
    return float(np.median(scan.volume.array[scan.labels == LABEL_IDS[name]]))


def test_tissue_hounsfield_units(small_scan):
    hu = small_scan.volume.array
    assert hu.dtype == np.float32 and np.all(np.isfinite(hu))
    assert hu.min() >= -1024 and hu.max() <= 3071
    assert -920 < _median(small_scan, "lung_left") < -720
    assert -920 < _median(small_scan, "lung_right") < -720
    for organ in ("heart", "aorta", "liver", "spleen"):
        assert 15 < _median(small_scan, organ) < 90, organ
    assert _median(small_scan, "vertebrae") > 150
    assert _median(small_scan, "ribs") > 150
    assert _median(small_scan, "airways") < -600
    # Air in the field of view outside the patient (first row is anterior to the body).
    assert abs(float(np.median(hu[:, 0, :])) + 1000) < 60
    # Subcutaneous and mediastinal fat make a visible share of voxels near -100 HU.
    assert np.mean((hu > -140) & (hu < -60)) > 0.02


def test_label_map_aligned_with_image(small_scan):
    labels = small_scan.labels
    assert labels.shape == small_scan.volume.shape and labels.dtype == np.int16
    assert set(np.unique(labels)) - {0} <= set(SEGMENTATION_LABELS)
    for name in ("lung_left", "lung_right", "heart", "aorta", "airways", "vertebrae", "ribs", "liver", "nodule"):
        assert np.any(labels == LABEL_IDS[name]), name
    # The patient's left lung lies at larger x index (i -> patient's left) than the right lung.
    left_i = np.nonzero(labels == LABEL_IDS["lung_left"])[2].mean()
    right_i = np.nonzero(labels == LABEL_IDS["lung_right"])[2].mean()
    assert left_i > right_i
    # Heart to the patient's left of the midline between the lungs; spine posterior to the heart;
    # liver on the patient's right and below the heart.
    heart = np.argwhere(labels == LABEL_IDS["heart"]).mean(axis=0)
    spine = np.argwhere(labels == LABEL_IDS["vertebrae"]).mean(axis=0)
    liver = np.argwhere(labels == LABEL_IDS["liver"]).mean(axis=0)
    assert heart[2] > (left_i + right_i) / 2
    assert spine[1] > heart[1]
    assert liver[2] < heart[2] and liver[0] < heart[0]
    lungs = np.isin(labels, [LABEL_IDS["lung_left"], LABEL_IDS["lung_right"]])
    assert np.mean(small_scan.volume.array[lungs] < -500) > 0.9


def test_row_holds_every_contract_column(small_scan):
    row = small_scan.row
    required = ["patient_id", "scan_id", "split", "path", "label_path", *FINDINGS, "sex", "smoker",
                *REGRESSION_TARGETS, "time", "event", *LOCALISATION_COLUMNS]
    assert [c for c in required if c not in row] == []
    assert row["sex"] in (0, 1) and row["smoker"] in (0, 1) and row["event"] in (0, 1)
    assert row["time"] > 0 and row["lung_volume_l"] > 1.0
    assert small_scan.report["scan_id"] == row["scan_id"]
    assert {"findings", "impression", "report"} <= set(small_scan.report)


def test_nodule_localisation_points_at_the_nodule(small_scan):
    row, geometry = small_scan.row, small_scan.volume.geometry
    world = np.array([row["nodule_x_mm"], row["nodule_y_mm"], row["nodule_z_mm"]])
    idx = geometry.world_to_index(world)
    norm = np.array([row["nodule_z_norm"], row["nodule_y_norm"], row["nodule_x_norm"]])
    np.testing.assert_allclose((idx + 0.5) / np.array(geometry.shape), norm, atol=1e-4)
    k, j, i = np.rint(idx).astype(int)
    window = small_scan.labels[k - 1 : k + 2, j - 1 : j + 2, i - 1 : i + 2]
    assert np.any(window == LABEL_IDS["nodule"])
    assert row["largest_nodule_mm"] >= 4.0


def test_no_nodule_leaves_localisation_empty(baseline):
    assert baseline.row["largest_nodule_mm"] == 0.0
    assert all(baseline.row[c] is None for c in LOCALISATION_COLUMNS)


# Where each finding may change the image: label names whose (dilated) region must hold the change.
EXPECTED_REGION = {
    "lung_nodule": ("nodule",),
    "pleural_effusion": ("effusion", "lung_left", "lung_right"),
    "emphysema": None,  # hyperinflation reshapes the thorax: checked through lung density instead
    "cardiomegaly": None,  # the heart grows: checked through its volume
    "lung_opacity": ("lung_left", "lung_right"),
    "consolidation": ("lung_left", "lung_right"),
    "atelectasis": ("lung_left", "lung_right"),
    "bronchiectasis": ("lung_left", "lung_right", "airways"),
    "peribronchial_thickening": ("lung_left", "lung_right", "airways"),
    "pericardial_effusion": ("heart",),
    "arterial_wall_calcification": ("aorta",),
    "coronary_artery_wall_calcification": ("heart", "aorta", "pulmonary_artery"),  # AV groove at the root
    "hiatal_hernia": ("stomach",),
    "lymphadenopathy": None,
    "medical_material": None,
}


@pytest.mark.parametrize("finding", FINDINGS)
def test_each_finding_changes_the_image_where_labelled(finding, baseline):
    scan = generate_scan(4, seed=1, size="tiny", findings={**ALL_OFF, finding: 1})
    assert scan.row[finding] == 1 and baseline.row[finding] == 0
    if scan.volume.shape != baseline.volume.shape:
        assert finding == "emphysema"  # hyperinflation changes the scan range
    else:
        diff = np.abs(scan.volume.array - baseline.volume.array)
        changed = diff > 0
        assert changed.sum() > 0
        region = EXPECTED_REGION[finding]
        if region is not None:
            mask = np.isin(scan.labels, [LABEL_IDS[n] for n in region]) | np.isin(
                baseline.labels, [LABEL_IDS[n] for n in region])
            # tiny voxels are 5 mm: 3 voxels cover the PSF; the pericardial sac reaches ~25 mm out.
            mask = ndimage.binary_dilation(mask, iterations=6 if finding == "pericardial_effusion" else 3)
            # Nearly all of the change (weighted by its size) lies in the labelled region.
            assert diff[mask].sum() / diff.sum() > 0.9, finding
    lungs = [LABEL_IDS["lung_left"], LABEL_IDS["lung_right"]]
    if finding == "emphysema":
        laa = np.mean(scan.volume.array[np.isin(scan.labels, lungs)] < -950)
        laa0 = np.mean(baseline.volume.array[np.isin(baseline.labels, lungs)] < -950)
        assert laa > laa0 + 0.02
        assert scan.row["lung_volume_l"] > baseline.row["lung_volume_l"]
    if finding == "cardiomegaly":
        assert scan.row["heart_volume_ml"] > 1.3 * baseline.row["heart_volume_ml"]
    if finding == "pleural_effusion":
        assert np.any(scan.labels == LABEL_IDS["effusion"]) and not np.any(baseline.labels == LABEL_IDS["effusion"])
        assert scan.row["lung_volume_l"] < baseline.row["lung_volume_l"]
    if finding == "lung_nodule":
        assert np.any(scan.labels == LABEL_IDS["nodule"])
    if finding == "medical_material":
        assert scan.volume.array.max() > 1500 > baseline.volume.array.max()
    if finding == "coronary_artery_wall_calcification":
        assert scan.row["calcium_score"] > 0 == baseline.row["calcium_score"]


def test_generation_is_deterministic():
    a = generate_scan(1, seed=5, size="tiny")
    b = generate_scan(1, seed=5, size="tiny")
    c = generate_scan(1, seed=6, size="tiny")
    np.testing.assert_array_equal(a.volume.array, b.volume.array)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.row == b.row and a.report == b.report
    assert a.volume.shape != c.volume.shape or not np.array_equal(a.volume.array, c.volume.array)


def test_repeat_scan_same_patient_different_acquisition():
    first = generate_scan(7, 0, seed=2, size="tiny")
    second = generate_scan(7, 1, seed=2, size="tiny")
    assert first.patient_id == second.patient_id and first.scan_id != second.scan_id
    for key in (*FINDINGS, "age", "sex", "smoker", "time", "event", "largest_nodule_mm", "calcium_score"):
        assert first.row[key] == second.row[key], key
    acq = ("kernel", "slice_thickness_mm", "pixel_spacing_mm", "fov_mm", "inspiration")
    assert any(first.row[k] != second.row[k] for k in acq)
    assert first.volume.geometry.origin != second.volume.geometry.origin


def test_bad_arguments_raise_voxelfm_errors():
    from voxelfm.core.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown size"):
        generate_scan(0, size="huge")
    with pytest.raises(ConfigError, match="unknown findings"):
        generate_scan(0, size="tiny", findings={"fracture": 1})


def test_scene_is_complete_and_read_only_before_painting():
    """Painters read one finished scene and return what they measure; none can change what a later
    painter sees (the fields are frozen and the shared arrays read-only)."""
    import dataclasses

    from voxelfm.data.phantom.acquisition import plan_geometry, sample_acquisition
    from voxelfm.data.phantom.anatomy import build_anatomy
    from voxelfm.data.phantom.canvas import Canvas
    from voxelfm.data.phantom.cohort import make_patient
    from voxelfm.data.phantom.constants import SIZES
    from voxelfm.data.phantom.render import build_scene, render

    patient = make_patient(0, seed=2)
    patient.findings.update(dict.fromkeys(FINDINGS, 1))
    rng = np.random.default_rng([2, 0, 100])
    acq = sample_acquisition(rng, SIZES["tiny"])
    anat, ref = build_anatomy(patient, acq.inspiration, True), build_anatomy(patient, 1.0, True)
    geometry, pose = plan_geometry(acq, anat, rng)
    canvas = Canvas(geometry, pose)
    scene = build_scene(canvas, anat, ref, patient, SIZES["tiny"], rng)
    fields = ("tex", "lob", "cav", "below", "heart_clear")
    assert all(getattr(scene, f).shape == canvas.shape and not getattr(scene, f).flags.writeable for f in fields)
    before = {f: getattr(scene, f).copy() for f in fields}
    with pytest.raises(dataclasses.FrozenInstanceError):
        scene.tex = None
    rendered = render(canvas, scene)
    assert all(np.array_equal(getattr(scene, f), before[f]) for f in fields)
    m = rendered.measurements
    assert m["largest_nodule_mm"] == max(n[0] for n in m["nodules"]) > 0
    assert m["calcium_score"] > 0 and m["lung_volume_l"] > 0 and m["effusion_volume_ml"] > 0
    assert len(rendered.metal_centres) >= 1  # pacemaker, port or sternotomy wires
