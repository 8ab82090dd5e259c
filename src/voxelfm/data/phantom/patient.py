"""Who the patient is: demographics, body habitus and findings with realistic co-occurrence.

Findings are drawn in a fixed order from logistic models: ``logit p = logit(base) + log(OR_age) *
(age - 60) / 10 + log(OR_smoker) * smoker + log(OR_male) * male + sum log(OR_parent) * parent``.
``base`` is the prevalence of a 60-year-old non-smoking woman without the parent findings. Every
coefficient is configurable through :class:`FindingModel` / :class:`PrevalenceConfig`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from voxelfm.core.errors import ConfigError, located
from voxelfm.data.phantom.conspicuity import RANGES, apply_conspicuity, check_conspicuity
from voxelfm.data.phantom.constants import FINDINGS


@dataclass(frozen=True)
class FindingModel:
    """Logistic prevalence model of one finding (odds ratios; see module docstring)."""

    base: float
    or_per_decade: float = 1.0
    or_smoker: float = 1.0
    or_male: float = 1.0
    parents: tuple[tuple[str, float], ...] = ()


def _default_models() -> dict[str, FindingModel]:
    # Bases are tuned so that cohort prevalences land near CT-RATE's (5-45 %); the odds ratios
    # encode well-known associations (calcification with age/sex/smoking, emphysema with smoking,
    # effusion with cardiomegaly, atelectasis with effusion, opacity with consolidation).
    return {
        "emphysema": FindingModel(0.06, 1.35, 5.0, 1.3),
        "arterial_wall_calcification": FindingModel(0.18, 2.6, 1.8, 1.3),
        "coronary_artery_wall_calcification": FindingModel(0.10, 2.3, 1.7, 2.2,
                                                            (("arterial_wall_calcification", 3.0),)),
        "cardiomegaly": FindingModel(0.06, 1.6, 1.2, 1.2),
        "pericardial_effusion": FindingModel(0.04, 1.2, 1.0, 1.0, (("cardiomegaly", 3.5),)),
        "pleural_effusion": FindingModel(0.06, 1.3, 1.1, 1.0, (("cardiomegaly", 3.5),)),
        "atelectasis": FindingModel(0.14, 1.25, 1.2, 1.0, (("pleural_effusion", 6.0),)),
        "consolidation": FindingModel(0.10, 1.2, 1.4, 1.1),
        "lung_opacity": FindingModel(0.22, 1.15, 1.3, 1.0, (("consolidation", 8.0),)),
        "lung_nodule": FindingModel(0.30, 1.3, 1.8, 1.0, (("emphysema", 1.5),)),
        "lymphadenopathy": FindingModel(0.14, 1.15, 1.2, 1.1, (("consolidation", 2.0), ("lung_nodule", 1.5))),
        "bronchiectasis": FindingModel(0.07, 1.25, 1.3, 1.0),
        "peribronchial_thickening": FindingModel(0.07, 1.1, 2.0, 1.0, (("bronchiectasis", 4.0),)),
        "hiatal_hernia": FindingModel(0.09, 1.45, 1.0, 0.7),
        "medical_material": FindingModel(0.05, 1.6, 1.0, 1.3, (("cardiomegaly", 3.0),)),
    }


@dataclass(frozen=True)
class PrevalenceConfig:
    """Finding models (by name) and demographic ranges of the cohort."""

    findings: dict[str, FindingModel] = field(default_factory=_default_models)
    age_mean: float = 62.0
    age_sd: float = 12.0
    male_fraction: float = 0.52
    smoker_fraction: float = 0.40
    #: 0 (default) .. 1: finding magnitudes moved towards their severe clinical end (see ``conspicuity``).
    conspicuity: float = 0.0

    def __post_init__(self) -> None:
        check_conspicuity(self.conspicuity)
        missing = [name for name in FINDINGS if name not in self.findings]
        unknown = [name for name in self.findings if name not in FINDINGS]
        if missing or unknown:
            raise ConfigError(located("PrevalenceConfig", f"missing findings {missing}, unknown {unknown}"))
        for name, model in self.findings.items():
            if not 0.0 < model.base < 1.0:
                raise ConfigError(located("PrevalenceConfig", f"{name}: base prevalence must be in (0, 1)"))

    def with_base(self, **bases: float) -> PrevalenceConfig:
        """A copy with some base prevalences changed, e.g. ``with_base(lung_nodule=0.5)``."""
        models = dict(self.findings)
        for name, value in bases.items():
            if name not in models:
                raise ConfigError(located("PrevalenceConfig", f"unknown finding {name!r}"))
            models[name] = dataclasses.replace(models[name], base=float(value))
        return dataclasses.replace(self, findings=models)


#: Base prevalences of the "enriched" cohort: tuned (with the default odds ratios and
#: demographics) so that every finding is present in about 30 % of patients, for statistical power
#: in small studies. Real cohorts are the "clinical" default (CT-RATE-like 5-45 %).
ENRICHED_BASES: dict[str, float] = {
    "medical_material": 0.19, "arterial_wall_calcification": 0.16, "cardiomegaly": 0.25,
    "pericardial_effusion": 0.21, "coronary_artery_wall_calcification": 0.09, "hiatal_hernia": 0.32,
    "lymphadenopathy": 0.20, "emphysema": 0.12, "atelectasis": 0.16, "lung_nodule": 0.20,
    "lung_opacity": 0.15, "pleural_effusion": 0.20, "consolidation": 0.25, "bronchiectasis": 0.25,
    "peribronchial_thickening": 0.15,
}

#: Prevalence presets of :func:`phantom_config`.
PREVALENCES: tuple[str, ...] = ("clinical", "enriched")


def phantom_config(prevalence: str = "clinical", conspicuity: float = 0.0) -> PrevalenceConfig | None:
    """The cohort config of a prevalence preset and a conspicuity; ``None`` for the default.

    ``None`` (not an equal object) keeps the default cohort's resume settings and files unchanged.
    """
    if prevalence not in PREVALENCES:
        raise ConfigError(located("phantom", f"unknown prevalence {prevalence!r}; choose one of {', '.join(PREVALENCES)}"))
    conspicuity = check_conspicuity(conspicuity)
    if prevalence == "clinical" and conspicuity == 0.0:
        return None
    config = PrevalenceConfig(conspicuity=conspicuity)
    return config.with_base(**ENRICHED_BASES) if prevalence == "enriched" else config


#: Order in which findings are drawn (parents before children).
DRAW_ORDER: tuple[str, ...] = (
    "emphysema", "arterial_wall_calcification", "coronary_artery_wall_calcification", "cardiomegaly",
    "pericardial_effusion", "pleural_effusion", "atelectasis", "consolidation", "lung_opacity",
    "lung_nodule", "lymphadenopathy", "bronchiectasis", "peribronchial_thickening", "hiatal_hernia",
    "medical_material",
)


@dataclass
class Patient:
    """Patient-level truth shared by all of the patient's scans."""

    patient_id: str
    age: float
    sex: int            # 1 = male, 0 = female
    smoker: int         # 1 = ever smoker
    pack_years: float
    height_cm: float
    bmi: float
    findings: dict[str, int]
    params: dict[str, Any]  # finding and anatomy parameters (sizes, sides, positions in unit frames)


def _logit(p: float) -> float:
    return float(np.log(p / (1.0 - p)))


def sample_findings(rng: np.random.Generator, age: float, male: int, smoker: int,
                    config: PrevalenceConfig) -> dict[str, int]:
    """Draw the 0/1 findings in :data:`DRAW_ORDER` from their logistic models."""
    out: dict[str, int] = {}
    for name in DRAW_ORDER:
        m = config.findings[name]
        z = _logit(m.base) + np.log(m.or_per_decade) * (age - 60.0) / 10.0
        z += np.log(m.or_smoker) * smoker + np.log(m.or_male) * male
        z += sum(np.log(orr) * out.get(parent, 0) for parent, orr in m.parents)
        out[name] = int(rng.random() < 1.0 / (1.0 + np.exp(-z)))
    return {name: out[name] for name in FINDINGS}


def sample_patient(rng: np.random.Generator, patient_id: str, config: PrevalenceConfig) -> Patient:
    """Demographics, habitus, findings and all finding parameters of one patient.

    Every parameter is drawn whether or not its finding is present, always in the same order, so
    toggling a finding (tests, counterfactuals) changes nothing else about the patient.
    """
    age = float(np.clip(rng.normal(config.age_mean, config.age_sd), 25, 92))
    male = int(rng.random() < config.male_fraction)
    smoker = int(rng.random() < config.smoker_fraction + 0.1 * (age > 55))
    pack_years = float(rng.gamma(2.0, 15.0)) if smoker else 0.0
    height = float(rng.normal(176 if male else 163, 7))
    bmi = float(np.clip(rng.lognormal(np.log(26.5), 0.17), 17, 45))
    findings = sample_findings(rng, age, male, smoker, config)
    params = apply_conspicuity(_finding_params(rng, age, male), config.conspicuity)
    return Patient(patient_id, round(age, 1), male, smoker, round(pack_years, 1), round(height, 1),
                   round(bmi, 1), findings, params)


def _draw(rng: np.random.Generator, key: str, size: int | None = None) -> Any:
    """A finding magnitude from its typical range (``conspicuity.RANGES``, the one table of them)."""
    return rng.uniform(RANGES[key].lo, RANGES[key].hi, size)


def _finding_params(rng: np.random.Generator, age: float, male: int) -> dict[str, Any]:
    p: dict[str, Any] = {}
    # Anatomy variation (unit-free factors; the anatomy module turns them into millimetres).
    p["anatomy_seed"] = int(rng.integers(2**31))
    p["heart_scale"] = float(rng.normal(1.0, 0.05))
    p["heart_angle_deg"] = float(rng.normal(40, 6))
    p["aorta_radius_mm"] = float(11.5 + 0.06 * (age - 60) + 1.0 * male + rng.normal(0, 0.8))
    p["breast_size"] = float(rng.uniform(0.4, 1.2))
    p["liver_hu"] = float(rng.normal(60, 6))
    # Nodules: 1-3, log-normal diameter, type, lobe position in the unit lung frame.
    n_nod = int(rng.choice([1, 1, 1, 2, 2, 3]))
    diam = np.sort(np.clip(rng.lognormal(np.log(8.0), 0.45, size=n_nod), 4.0, 30.0))[::-1]
    p["nodules"] = [
        {
            "diameter_mm": round(float(d), 1),
            "kind": str(rng.choice(["solid", "solid", "solid", "part-solid", "ground-glass"])),
            "side": str(rng.choice(["left", "right"])),
            "unit_pos": [float(v) for v in rng.uniform(-1, 1, size=3)],
            "lobulation": float(rng.uniform(0, 0.35)),
        }
        for d in diam
    ]
    p["emphysema_severity"] = float(_draw(rng, "emphysema_severity"))
    p["effusion_side"] = str(rng.choice(["left", "right", "bilateral"], p=[0.35, 0.35, 0.3]))
    p["effusion_depth"] = float(_draw(rng, "effusion_depth"))  # fraction of the hemithorax depth
    p["pericardial_mm"] = float(_draw(rng, "pericardial_mm"))
    p["cardiomegaly_scale"] = float(_draw(rng, "cardiomegaly_scale"))
    p["consolidation"] = {"side": str(rng.choice(["left", "right"])), "unit_pos": rng.uniform(-0.7, 0.7, 3).tolist(),
                          "radius_mm": float(_draw(rng, "consolidation.radius_mm"))}
    p["opacity"] = {"n": int(rng.integers(1, 4)), "unit_pos": rng.uniform(-0.8, 0.8, (3, 3)).tolist(),
                    "sides": rng.choice(["left", "right"], 3).tolist(), "radius_mm": _draw(rng, "opacity.radius_mm", 3).tolist(),
                    "delta_hu": float(_draw(rng, "opacity.delta_hu"))}
    p["atelectasis"] = {"side": str(rng.choice(["left", "right"])), "n_bands": int(rng.integers(1, 4)),
                        "unit_pos": rng.uniform(-0.8, 0.8, (3, 3)).tolist()}
    p["nodes"] = {"n": int(rng.integers(1, 4)), "short_mm": _draw(rng, "nodes.short_mm", 3).tolist(),
                  "stations": rng.permutation(6)[:3].tolist()}
    p["calcium"] = {"aortic_n": int(rng.integers(3, 16)), "coronary_n": int(rng.integers(1, 8)),
                    "aortic_t": rng.uniform(0, 1, 16).tolist(), "aortic_angle": rng.uniform(0, 2 * np.pi, 16).tolist(),
                    "aortic_r": _draw(rng, "calcium.aortic_r", 16).tolist(), "coronary_t": rng.uniform(0, 1, 8).tolist(),
                    "coronary_vessel": rng.integers(0, 3, 8).tolist(), "coronary_r": _draw(rng, "calcium.coronary_r", 8).tolist(),
                    "hu": _draw(rng, "calcium.hu", 24).tolist()}
    p["hernia_mm"] = float(_draw(rng, "hernia_mm"))
    p["bronchiectasis_factor"] = float(_draw(rng, "bronchiectasis_factor"))
    p["material"] = str(rng.choice(["pacemaker", "port", "sternotomy"], p=[0.45, 0.35, 0.2]))
    return p
