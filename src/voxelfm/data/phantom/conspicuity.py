"""Conspicuity: move every finding's magnitudes towards the severe end of its clinical range.

The default phantom draws finding sizes and densities from typical clinical ranges, where most
findings are small against the inter-patient variation of anatomy and acquisition (a 6 mm
nodule, a 5 mm plate of atelectasis, a thin pericardial rim). A frozen-feature study of a small
cohort cannot see them. ``conspicuity`` c in [0, 1] rescales the patient's already drawn
parameters, without new random draws, so every patient, acquisition and label stays the same and
only magnitudes move:

* a uniform parameter drawn in the default range ``[lo, hi]`` keeps its quantile in a range whose
  ends move linearly towards the severe range ``[s_lo, s_hi]`` (reached at c = 1);
* counts move towards their maximum; nodule diameters are multiplied by ``1 + c`` (still <= 30 mm,
  above which a lesion is a mass);
* a few painting constants (atelectasis plate thickness and extent, compressive band, bronchial
  wall thickening) get explicit parameters, written only when c > 0.

c = 0 returns the parameters unchanged (the default phantom is byte-identical). :data:`RANGES`
lists the default and severe ranges and what in real CT each severe end corresponds to; all are
within what chest CT shows, but at c = 1 every finding is at its severe end, which no real cohort is.
"""

from __future__ import annotations

import copy
from typing import Any, NamedTuple

from voxelfm.core.errors import ConfigError, located


class Range(NamedTuple):
    """Default draw range, severe range, and the clinical meaning of the severe end."""

    lo: float
    hi: float
    severe_lo: float
    severe_hi: float
    clinical: str


#: Parameter (key in ``Patient.params``, dotted for nested dicts) -> ranges.
RANGES: dict[str, Range] = {
    "emphysema_severity": Range(0.3, 1.0, 0.9, 1.6, "severe (panlobular-like) emphysema: ~15-35 % of lung below -950 HU"),
    "effusion_depth": Range(0.12, 0.40, 0.30, 0.60, "large effusion: fluid over up to 60 % of the hemithorax depth"),
    "pericardial_mm": Range(6.0, 16.0, 16.0, 30.0, "large pericardial effusion (> 20 mm)"),
    "cardiomegaly_scale": Range(1.18, 1.40, 1.40, 1.65, "marked cardiomegaly (cardiothoracic ratio ~0.6-0.7)"),
    "consolidation.radius_mm": Range(22.0, 45.0, 45.0, 70.0, "lobar consolidation"),
    "opacity.radius_mm": Range(20.0, 45.0, 40.0, 65.0, "extensive ground glass over several segments"),
    "opacity.delta_hu": Range(220.0, 330.0, 300.0, 420.0, "dense ground glass (about -550 to -450 HU)"),
    "nodes.short_mm": Range(11.0, 24.0, 20.0, 35.0, "bulky mediastinal nodes (short axis 2-3.5 cm)"),
    "hernia_mm": Range(28.0, 50.0, 50.0, 80.0, "large sliding hiatal hernia"),
    "bronchiectasis_factor": Range(1.8, 2.6, 2.6, 3.6, "varicose-cystic bronchiectasis (bronchoarterial ratio > 2.5)"),
    "calcium.aortic_r": Range(1.2, 3.2, 2.5, 4.5, "extensive aortic plaques up to 9 mm"),
    "calcium.coronary_r": Range(1.0, 3.2, 2.0, 4.0, "heavy coronary calcification (Agatston > 400)"),
    "calcium.hu": Range(350.0, 1100.0, 700.0, 1300.0, "dense calcium"),
    "atelectasis_mm": Range(3.5, 3.5, 12.0, 12.0, "segmental atelectasis (plate thickness 3.5 -> 12 mm)"),
    "atelectasis_scale": Range(1.0, 1.0, 1.5, 1.5, "plate extent 38 x 28 mm -> 57 x 42 mm"),
    "atelectasis_band_mm": Range(14.0, 14.0, 30.0, 30.0, "compressive atelectasis above an effusion, 14 -> 30 mm"),
    "peribronchial_factor": Range(2.3, 2.3, 3.5, 3.5, "bronchial wall thickening x2.3 -> x3.5"),
}

#: Counts that move towards their maximum (parameter -> maximum).
COUNTS: dict[str, int] = {"opacity.n": 3, "atelectasis.n_bands": 3, "nodes.n": 3,
                          "calcium.aortic_n": 15, "calcium.coronary_n": 7}

#: Painting constants made explicit when c > 0 (their default values; the painters fall back to these).
CONSTANTS = ("atelectasis_mm", "atelectasis_scale", "atelectasis_band_mm", "peribronchial_factor")

MAX_NODULE_MM = 30.0


def check_conspicuity(value: float) -> float:
    """``value`` as a float, or :class:`ConfigError` outside [0, 1]."""
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ConfigError(located("phantom", f"conspicuity must be in [0, 1], got {value:g}"))
    return value


def _rescale(x: float, r: Range, c: float) -> float:
    lo, hi = r.lo + c * (r.severe_lo - r.lo), r.hi + c * (r.severe_hi - r.hi)
    q = 0.5 if r.hi == r.lo else (x - r.lo) / (r.hi - r.lo)
    return float(lo + q * (hi - lo))


def _get(params: dict[str, Any], key: str) -> tuple[dict[str, Any], str]:
    parts = key.split(".")
    holder = params
    for part in parts[:-1]:
        holder = holder[part]
    return holder, parts[-1]


def apply_conspicuity(params: dict[str, Any], c: float) -> dict[str, Any]:
    """The patient parameters with every finding magnitude moved a fraction ``c`` to its severe end.

    ``c = 0`` returns ``params`` itself. Deterministic (no random draws); anatomy parameters
    (heart scale, aorta, habitus) and positions, sides and kinds are never changed.
    """
    c = check_conspicuity(c)
    if c == 0.0:
        return params
    out = copy.deepcopy(params)
    for key in CONSTANTS:
        out[key] = RANGES[key].lo
    for key, r in RANGES.items():
        holder, leaf = _get(out, key)
        value = holder[leaf]
        holder[leaf] = [_rescale(v, r, c) for v in value] if isinstance(value, list) else _rescale(value, r, c)
    for key, top in COUNTS.items():
        holder, leaf = _get(out, key)
        holder[leaf] = int(round(holder[leaf] + c * (top - holder[leaf])))
    for nod in out["nodules"]:
        nod["diameter_mm"] = round(min(MAX_NODULE_MM, nod["diameter_mm"] * (1.0 + c)), 1)
    out["conspicuity"] = c
    return out
