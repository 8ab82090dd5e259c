"""Names and numbers other modules rely on: findings, label ids, targets, tissue HU, sizes."""

from __future__ import annotations

from dataclasses import dataclass

#: The findings of the cohort, CT-RATE abnormality names in snake_case (one 0/1 column each).
FINDINGS: tuple[str, ...] = (
    "medical_material",
    "arterial_wall_calcification",
    "cardiomegaly",
    "pericardial_effusion",
    "coronary_artery_wall_calcification",
    "hiatal_hernia",
    "lymphadenopathy",
    "emphysema",
    "atelectasis",
    "lung_nodule",
    "lung_opacity",
    "pleural_effusion",
    "consolidation",
    "bronchiectasis",
    "peribronchial_thickening",
)

#: Label-map ids (0 = background). Written as int16 NIfTI in ``labels/<scan_id>.nii.gz``.
SEGMENTATION_LABELS: dict[int, str] = {
    1: "lung_left",
    2: "lung_right",
    3: "heart",
    4: "aorta",
    5: "airways",
    6: "vertebrae",
    7: "ribs",
    8: "nodule",
    9: "effusion",
    10: "liver",
    11: "pulmonary_artery",
    12: "sternum",
    13: "esophagus",
    14: "stomach",
    15: "spleen",
}
LABEL_IDS: dict[str, int] = {name: idx for idx, name in SEGMENTATION_LABELS.items()}

#: Continuous per-scan targets (columns of labels.csv).
REGRESSION_TARGETS: tuple[str, ...] = (
    "age",
    "lung_volume_l",
    "heart_volume_ml",
    "largest_nodule_mm",
    "calcium_score",
)
#: What each continuous target is and its unit, for tables: ``{column: (name, unit)}``.
TARGET_NAMES: dict[str, tuple[str, str]] = {
    "age": ("age", "years"), "lung_volume_l": ("lung volume", "litres"),
    "heart_volume_ml": ("heart volume", "millilitres"), "largest_nodule_mm": ("largest nodule diameter", "mm"),
    "calcium_score": ("calcium burden score", "score points")}

#: Patient-level classes (columns of labels.csv): sex 1 = male, 0 = female; smoker 1 = ever smoker.
PATIENT_CLASSES: tuple[str, ...] = ("sex", "smoker")

LOCALISATION_COLUMNS: tuple[str, ...] = (
    "nodule_x_mm", "nodule_y_mm", "nodule_z_mm", "nodule_z_norm", "nodule_y_norm", "nodule_x_norm",
)


class HU:
    """Non-contrast tissue attenuations (Hounsfield units) used by the renderer."""

    AIR = -1000.0
    LUNG = -860.0  # aerated parenchyma at full inspiration, before gravity gradient and texture
    FAT = -100.0
    FLUID = 10.0
    MUSCLE = 45.0
    BLOOD = 40.0
    MYOCARDIUM = 50.0
    LIVER = 60.0
    SPLEEN = 48.0
    CORTICAL_BONE = 1000.0
    TRABECULAR_BONE = 250.0
    CARTILAGE = 110.0
    CALCIUM = 650.0
    METAL = 3000.0
    TABLE_SKIN = 300.0
    TABLE_FOAM = -850.0
    MATTRESS = -250.0


@dataclass(frozen=True)
class SizePreset:
    """Acquisition ranges of a cohort size (in-plane matrix, slice thickness choices, detail)."""

    name: str
    matrix: tuple[int, ...]          # in-plane matrix sizes to pick from (FOV / matrix = spacing)
    thickness_mm: tuple[float, ...]  # slice thickness = slice increment
    vessel_min_radius_mm: float      # stop growing vessel trees below this radius
    texture_scale_mm: float          # grid step of the coarse texture fields


SIZES: dict[str, SizePreset] = {
    # CI / unit tests: ~64 px in-plane, ~40-55 slices at 5-7 mm.
    "tiny": SizePreset("tiny", (60, 64, 68), (5.0, 6.0, 7.0), 1.2, 10.0),
    # benchmarks / demo: ~1.6-2.4 mm in-plane (160-192 px), 2.5-3 mm slices (~90-130 slices).
    "small": SizePreset("small", (160, 176, 192), (2.5, 3.0), 0.45, 6.0),
    # clinical-like: 512 px (0.6-0.8 mm), 1-1.5 mm slices.
    "standard": SizePreset("standard", (512,), (1.0, 1.25, 1.5), 0.3, 4.0),
}
