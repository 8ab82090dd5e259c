"""Generate scans and cohorts in memory: a CT volume, its label map, a labels row and a report.

Determinism: every random draw comes from a generator seeded by ``(seed, patient_index, stream)``,
so a scan is the same whether generated alone, in a cohort, serially or in a worker process.
Patient-level streams (demographics, findings, anatomy, survival) are shared by a patient's
repeat scans; scan-level streams (acquisition, pose, inspiration, texture, noise) differ.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from voxelfm.core.errors import ConfigError, located
from voxelfm.core.types import CTVolume
from voxelfm.data.phantom.acquisition import apply_scanner, plan_geometry, sample_acquisition
from voxelfm.data.phantom.anatomy import build_anatomy
from voxelfm.data.phantom.canvas import Canvas
from voxelfm.data.phantom.constants import FINDINGS, SIZES
from voxelfm.data.phantom.patient import Patient, PrevalenceConfig, sample_patient
from voxelfm.data.phantom.render import (
    add_metal_streaks,
    build_scene,
    coronary_calcium_score,
    render,
)
from voxelfm.data.phantom.reports import write_report
from voxelfm.data.phantom.survival import linear_predictor, sample_survival
from voxelfm.data.phantom.workers import default_workers, worker_pool

#: Probability that a patient has 1, 2 or 3 scans (repeat acquisitions for retrieval).
SCANS_PER_PATIENT = {1: 0.75, 2: 0.20, 3: 0.05}
_PATIENT_STREAM, _SURVIVAL_STREAM, _REPORT_STREAM = 0, 1, 2


@dataclass(frozen=True)
class ScanPlan:
    """Identity of one scan of the cohort."""

    patient_index: int
    scan_index: int
    patient_id: str
    scan_id: str
    split: str = "train"


@dataclass
class PhantomScan:
    """One generated scan: HU volume (canonical LPS), int16 label map, labels row and report."""

    volume: CTVolume
    labels: np.ndarray
    row: dict[str, Any]
    report: dict[str, Any]

    @property
    def scan_id(self) -> str:
        return str(self.row["scan_id"])

    @property
    def patient_id(self) -> str:
        return str(self.row["patient_id"])


@dataclass
class Cohort:
    """A list of :class:`PhantomScan` with table views."""

    scans: list[PhantomScan]
    seed: int
    size: str

    def __len__(self) -> int:
        return len(self.scans)

    def __iter__(self) -> Iterator[PhantomScan]:
        return iter(self.scans)

    def __getitem__(self, index: int) -> PhantomScan:
        return self.scans[index]

    def table(self):
        """The labels table (pandas DataFrame), one row per scan, as in ``labels.csv``."""
        import pandas as pd

        return pd.DataFrame([s.row for s in self.scans])

    def reports(self) -> list[dict[str, Any]]:
        return [s.report for s in self.scans]


def patient_id_of(index: int) -> str:
    return f"PH{index:05d}"


def plan_cohort(n: int, seed: int = 0) -> list[ScanPlan]:
    """Patients and their scans for ``n`` scans (splits are assigned by the caller)."""
    if n < 1:
        raise ConfigError(located("phantom", f"--n must be >= 1, got {n}"))
    rng = np.random.default_rng([seed, 2**20])
    counts, probs = np.array(list(SCANS_PER_PATIENT)), np.array(list(SCANS_PER_PATIENT.values()))
    plans: list[ScanPlan] = []
    p = 0
    while len(plans) < n:
        k = int(rng.choice(counts, p=probs))
        for s in range(min(k, n - len(plans))):
            plans.append(ScanPlan(p, s, patient_id_of(p), f"{patient_id_of(p)}_s{s + 1}"))
        p += 1
    return plans


def make_patient(patient_index: int, seed: int, config: PrevalenceConfig | None = None) -> Patient:
    rng = np.random.default_rng([seed, patient_index, _PATIENT_STREAM])
    return sample_patient(rng, patient_id_of(patient_index), config or PrevalenceConfig())


def check_size(size: str) -> None:
    """Raise :class:`ConfigError` unless ``size`` names a preset of :data:`SIZES`."""
    if size not in SIZES:
        raise ConfigError(located("phantom", f"unknown size {size!r}; choose one of {', '.join(SIZES)}"))


def generate_scan(patient_index: int = 0, scan_index: int = 0, *, seed: int = 0, size: str = "small",
                  config: PrevalenceConfig | None = None, findings: dict[str, int] | None = None,
                  split: str = "train", format: str = "nifti") -> PhantomScan:
    """Generate one scan of patient ``patient_index`` (repeat ``scan_index``) in memory.

    ``findings`` overrides some of the patient's 0/1 findings (everything else about the patient
    and the acquisition stays identical, which is how tests check that a finding changes the
    image where its label says).
    """
    check_size(size)
    if patient_index < 0 or scan_index < 0:
        raise ConfigError(located("generate_scan", f"indices must be >= 0, got patient {patient_index}, scan {scan_index}"))
    if format not in ("nifti", "dicom"):
        raise ConfigError(located("generate_scan", f"format must be 'nifti' or 'dicom', got {format!r}"))
    patient = make_patient(patient_index, seed, config)
    if findings:
        unknown = sorted(set(findings) - set(FINDINGS))
        if unknown:
            raise ConfigError(located("generate_scan", f"unknown findings {unknown}"))
        patient.findings.update({k: int(bool(v)) for k, v in findings.items()})
    plan = ScanPlan(patient_index, scan_index, patient.patient_id, f"{patient.patient_id}_s{scan_index + 1}", split)
    return _generate(plan, patient, seed, size, format)


def _generate(plan: ScanPlan, patient: Patient, seed: int, size: str, format: str) -> PhantomScan:
    preset = SIZES[size]
    rng = np.random.default_rng([seed, plan.patient_index, 100 + plan.scan_index])
    emph = patient.findings["emphysema"] == 1
    acq = sample_acquisition(rng, preset)
    anat = build_anatomy(patient, acq.inspiration, emph)
    ref = build_anatomy(patient, 1.0, emph)
    geometry, pose = plan_geometry(acq, anat, rng)
    canvas = Canvas(geometry, pose)
    rendered = render(canvas, build_scene(canvas, anat, ref, patient, preset, rng))
    labels = canvas.labels
    add_metal_streaks(canvas.hu, canvas, patient, rendered.metal_centres)
    hu = apply_scanner(canvas.hu, geometry, acq, anat, rng)
    del canvas
    m = rendered.measurements

    volume = CTVolume(array=hu, geometry=geometry, source=f"phantom:{plan.scan_id}", modality="CT",
                      series_uid=None, metadata={
                          "patient_id": plan.patient_id, "scan_id": plan.scan_id, "kernel": acq.kernel,
                          "kvp": acq.kvp, "mas": acq.mas, "slice_thickness_mm": acq.thickness_mm,
                          "fov_mm": round(acq.fov_mm, 1), "phantom_seed": seed, "phantom_size": size})
    row = _row(plan, patient, acq, m, geometry, pose, seed, format)
    report_rng = np.random.default_rng([seed, plan.patient_index, _REPORT_STREAM, plan.scan_index])
    text = write_report(patient.findings, patient.params, m,
                        {"thickness_mm": acq.thickness_mm, "kernel": acq.kernel}, report_rng)
    report = {"scan_id": plan.scan_id, "patient_id": plan.patient_id, "split": plan.split, **text}
    return PhantomScan(volume, labels, row, report)


def _row(plan: ScanPlan, patient: Patient, acq, m: dict[str, Any], geometry, pose, seed: int,
         format: str) -> dict[str, Any]:
    calcium = coronary_calcium_score(patient)
    largest = float(m.get("largest_nodule_mm", 0.0))
    risk = linear_predictor(patient.age, patient.smoker, patient.findings, largest, calcium)
    surv = sample_survival(np.random.default_rng([seed, plan.patient_index, _SURVIVAL_STREAM]), risk)
    row: dict[str, Any] = {
        "patient_id": plan.patient_id,
        "scan_id": plan.scan_id,
        "split": plan.split,
        "path": f"images/{plan.scan_id}" + (".nii.gz" if format == "nifti" else ""),
        "label_path": f"labels/{plan.scan_id}.nii.gz",
    }
    row.update({name: int(patient.findings[name]) for name in FINDINGS})
    row.update({"sex": patient.sex, "smoker": patient.smoker, "age": patient.age,
                "lung_volume_l": float(m["lung_volume_l"]), "heart_volume_ml": float(m["heart_volume_ml"]),
                "largest_nodule_mm": largest, "calcium_score": calcium,
                "time": surv.time, "event": surv.event})
    nodules = m.get("nodules") or []
    loc: dict[str, Any] = dict.fromkeys(("nodule_x_mm", "nodule_y_mm", "nodule_z_mm", "nodule_z_norm",
                                         "nodule_y_norm", "nodule_x_norm"))
    lobe = ""
    if nodules:
        big = max(nodules, key=lambda n: n[0])
        world = pose.to_world(big[1])
        idx = geometry.world_to_index(world)
        loc.update({"nodule_x_mm": round(float(world[0]), 2), "nodule_y_mm": round(float(world[1]), 2),
                    "nodule_z_mm": round(float(world[2]), 2)})
        for name, a in (("nodule_z_norm", 0), ("nodule_y_norm", 1), ("nodule_x_norm", 2)):
            loc[name] = round(float((idx[a] + 0.5) / geometry.shape[a]), 5)
        lobe = big[4]
    row.update(loc)
    row.update({
        "n_nodules": len(nodules), "nodule_lobe": lobe, "effusion_volume_ml": float(m["effusion_volume_ml"]),
        "risk_score": surv.risk_score, "bmi": patient.bmi, "pack_years": patient.pack_years,
        "kernel": acq.kernel, "slice_thickness_mm": acq.thickness_mm,
        "pixel_spacing_mm": round(geometry.spacing[1], 4), "fov_mm": round(acq.fov_mm, 1),
        "n_slices": geometry.shape[0], "inspiration": round(acq.inspiration, 3), "scan_index": plan.scan_index,
    })
    return row


def generate_planned(args: tuple[ScanPlan, int, str, PrevalenceConfig | None, str]) -> PhantomScan:
    """Generate the scan of ``(plan, seed, size, config, format)`` (one picklable argument: a pool job)."""
    plan, seed, size, config, format = args
    return _generate(plan, make_patient(plan.patient_index, seed, config), seed, size, format)


def generate_cohort(n: int, seed: int = 0, size: str = "small", *, config: PrevalenceConfig | None = None,
                    workers: int | None = None, format: str = "nifti",
                    progress: Callable[[PhantomScan], None] | None = None) -> Cohort:
    """Generate ``n`` scans in memory with patient-level train/val/test splits (70/15/15)."""
    check_size(size)
    plans = assign_splits(plan_cohort(n, seed), seed)
    jobs = [(p, seed, size, config, format) for p in plans]
    workers = default_workers(n, size) if workers is None else max(1, workers)
    scans: list[PhantomScan] = []
    if workers == 1:
        for job in jobs:
            scans.append(generate_planned(job))
            if progress:
                progress(scans[-1])
    else:
        with worker_pool(workers) as pool:
            for scan in pool.map(generate_planned, jobs):
                scans.append(scan)
                if progress:
                    progress(scan)
    return Cohort(scans, seed, size)


def assign_splits(plans: Sequence[ScanPlan], seed: int,
                  fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)) -> list[ScanPlan]:
    """Give every scan its patient's split (patient-level, deterministic by seed)."""
    import pandas as pd

    from voxelfm.data.splits import patient_level_split

    df = pd.DataFrame({"patient_id": [p.patient_id for p in plans]})
    split = patient_level_split(df, fractions=fractions, seed=seed)
    return [ScanPlan(p.patient_index, p.scan_index, p.patient_id, p.scan_id, s) for p, s in zip(plans, split, strict=True)]
