"""CT-RATE-style free-text reports written from the ground truth, with varied phrasing.

Each organ system gets one of several sentence variants; abnormal findings carry their
measurements (nodule diameter and lobe, effusion side and amount, aortic diameter, calcium
score) and normal systems are stated as negations ("No pleural effusion."), so a report is never
a fixed template and negation handling matters for label extraction.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from voxelfm.data.phantom.constants import FINDINGS

#: One organ system's sentences: (findings lines, impression lines).
Section = tuple[list[str], list[str]]


def _pick(rng: np.random.Generator, options: list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _amount(depth: float) -> str:
    return "small" if depth < 0.2 else ("moderate" if depth < 0.3 else "large")


def _side_phrase(side: str) -> str:
    return {"left": "left", "right": "right", "bilateral": "bilateral"}[side]


def _technique(technique: dict[str, Any], rng: np.random.Generator) -> Section:
    """How the scan was acquired."""
    lines: list[str] = []
    impression: list[str] = []
    lines.append(_pick(rng, [
        f"Technique: non-contrast chest CT, {technique['thickness_mm']:g} mm axial sections, {technique['kernel']} kernel.",
        f"Non-enhanced thoracic CT was acquired with {technique['thickness_mm']:g} mm slice thickness.",
        "Examination performed without intravenous contrast.",
    ]))
    return lines, impression


def _airways(f: dict[str, int], rng: np.random.Generator) -> Section:
    """Trachea and bronchi."""
    lines: list[str] = []
    impression: list[str] = []
    if f["bronchiectasis"]:
        lines.append(_pick(rng, ["Cylindrical bronchiectasis is seen in the lower lobes.",
                                 "Bronchial dilatation consistent with bronchiectasis in both lower lobes."]))
        impression.append("Lower lobe bronchiectasis.")
    if f["peribronchial_thickening"]:
        lines.append(_pick(rng, ["Peribronchial wall thickening is noted.", "Bronchial walls are thickened."]))
        impression.append("Peribronchial thickening.")
    if not (f["bronchiectasis"] or f["peribronchial_thickening"]):
        lines.append(_pick(rng, ["Trachea and main bronchi are patent.", "The central airways are open.",
                                 "Trachea and both main bronchi are normal in calibre and patent."]))
    return lines, impression


def _heart_and_vessels(f: dict[str, int], params: dict[str, Any], measurements: dict[str, Any], rng: np.random.Generator) -> Section:
    """Heart, pericardium, aortic and coronary calcification."""
    lines: list[str] = []
    impression: list[str] = []
    if f["cardiomegaly"]:
        lines.append(_pick(rng, ["The heart is enlarged.", "Cardiomegaly is present.",
                                 f"Cardiac silhouette is enlarged (heart volume about {measurements['heart_volume_ml']:.0f} mL)."]))
        impression.append("Cardiomegaly.")
    else:
        lines.append(_pick(rng, ["Heart size is normal.", "The heart is not enlarged.", "Cardiac dimensions are within normal limits."]))
    if f["pericardial_effusion"]:
        mm = params["pericardial_mm"]
        lines.append(_pick(rng, [f"Pericardial effusion measuring up to {mm:.0f} mm.",
                                 f"There is a pericardial effusion with a maximal thickness of {mm:.0f} mm."]))
        impression.append("Pericardial effusion.")
    else:
        lines.append(_pick(rng, ["No pericardial effusion.", "There is no pericardial effusion or thickening."]))
    if f["arterial_wall_calcification"]:
        lines.append(_pick(rng, ["Atherosclerotic calcifications of the thoracic aorta.",
                                 "Calcified plaques are present in the aortic wall."]))
        impression.append("Aortic atherosclerosis.")
    if f["coronary_artery_wall_calcification"]:
        score = measurements.get("calcium_score", 0.0)
        lines.append(_pick(rng, [f"Coronary artery calcifications (calcium score about {score:.0f}).",
                                 "Calcified plaques in the coronary arteries.",
                                 f"Coronary calcifications are present; estimated score {score:.0f}."]))
        impression.append("Coronary artery calcification.")
    if not (f["arterial_wall_calcification"] or f["coronary_artery_wall_calcification"]):
        lines.append(_pick(rng, ["No vascular calcification.", "No calcified atherosclerotic plaque is seen."]))
    return lines, impression


def _mediastinum(f: dict[str, int], params: dict[str, Any], measurements: dict[str, Any], rng: np.random.Generator) -> Section:
    """Lymph nodes, hiatal hernia, medical material."""
    lines: list[str] = []
    impression: list[str] = []
    if f["lymphadenopathy"]:
        size = measurements.get("largest_node_mm", 0.0)
        lines.append(_pick(rng, [f"Enlarged mediastinal lymph nodes, the largest {size:.0f} mm in short axis.",
                                 f"Mediastinal and hilar lymphadenopathy up to {size:.0f} mm."]))
        impression.append("Mediastinal lymphadenopathy.")
    else:
        lines.append(_pick(rng, ["No mediastinal or hilar lymphadenopathy.",
                                 "Mediastinal lymph nodes are not enlarged.", "No pathologically enlarged lymph nodes."]))
    if f["hiatal_hernia"]:
        lines.append(_pick(rng, ["Hiatal hernia.", f"A hiatal hernia measuring about {params['hernia_mm']:.0f} mm is seen."]))
        impression.append("Hiatal hernia.")
    if f["medical_material"]:
        what = {"pacemaker": "A cardiac pacemaker with its lead in the right ventricle.",
                "port": "A right chest wall port catheter with its tip at the cavoatrial junction.",
                "sternotomy": "Median sternotomy wires."}[params["material"]]
        lines.append(what)
        impression.append({"pacemaker": "Pacemaker in place.", "port": "Port catheter in place.",
                           "sternotomy": "Post-sternotomy changes."}[params["material"]])
    return lines, impression


def _lungs(f: dict[str, int], params: dict[str, Any], measurements: dict[str, Any], rng: np.random.Generator) -> Section:
    """Emphysema, nodules, consolidation and ground glass, atelectasis."""
    lines: list[str] = []
    impression: list[str] = []
    if f["emphysema"]:
        sev = params["emphysema_severity"]
        grade = "mild" if sev < 0.5 else ("moderate" if sev < 0.8 else "severe")
        lines.append(_pick(rng, [f"{grade.capitalize()} centrilobular emphysema, upper lobe predominant.",
                                 f"Emphysematous changes of {grade} degree in both upper lobes."]))
        impression.append(f"{grade.capitalize()} emphysema.")
    nodules = measurements.get("nodules", [])
    if f["lung_nodule"] and nodules:
        largest = max(nodules, key=lambda n: n[0])
        kind = {"solid": "solid", "part-solid": "part-solid", "ground-glass": "ground-glass"}[largest[2]]
        if len(nodules) == 1:
            lines.append(_pick(rng, [f"A {largest[0]:.0f} mm {kind} nodule in the {largest[4]}.",
                                     f"There is a {kind} pulmonary nodule measuring {largest[0]:.1f} mm in the {largest[4]}."]))
        else:
            lines.append(_pick(rng, [f"{len(nodules)} pulmonary nodules, the largest {largest[0]:.0f} mm ({kind}) in the {largest[4]}.",
                                     f"Multiple lung nodules; the dominant one is {kind}, {largest[0]:.1f} mm, {largest[4]}."]))
        impression.append(f"Pulmonary nodule{'s' if len(nodules) > 1 else ''}, largest {largest[0]:.0f} mm.")
    else:
        lines.append(_pick(rng, ["No pulmonary nodule.", "No suspicious nodule or mass in either lung."]))
    if f["consolidation"]:
        side = params["consolidation"]["side"]
        lines.append(_pick(rng, [f"Consolidation with air bronchograms in the {side} lung.",
                                 f"Area of consolidation in the {side} lung."]))
        impression.append(f"{side.capitalize()} lung consolidation.")
    if f["lung_opacity"]:
        lines.append(_pick(rng, ["Patchy ground-glass opacities.", "Ground-glass densities are seen in both lungs.",
                                 "Areas of increased attenuation (ground glass)."]))
        impression.append("Ground-glass opacities.")
    if not (f["consolidation"] or f["lung_opacity"]):
        lines.append(_pick(rng, ["No consolidation or ground-glass opacity.", "Lung parenchyma shows no infiltrate."]))
    if f["atelectasis"]:
        lines.append(_pick(rng, ["Subsegmental atelectasis in the lower lobes.", "Linear atelectatic bands at the lung bases."]))
        impression.append("Atelectasis.")
    return lines, impression


def _pleura(f: dict[str, int], params: dict[str, Any], measurements: dict[str, Any], rng: np.random.Generator) -> Section:
    """Pleural effusion."""
    lines: list[str] = []
    impression: list[str] = []
    if f["pleural_effusion"]:
        side = _side_phrase(params["effusion_side"])
        amount = _amount(params["effusion_depth"])
        vol = measurements.get("effusion_volume_ml", 0.0)
        lines.append(_pick(rng, [f"{amount.capitalize()} {side} pleural effusion (about {vol:.0f} mL).",
                                 f"There is a {amount} {side} pleural effusion."]))
        impression.append(f"{amount.capitalize()} {side} pleural effusion.")
    else:
        lines.append(_pick(rng, ["No pleural effusion.", "No pleural effusion or thickening.", "Pleural spaces are clear."]))
    return lines, impression


def write_report(findings: dict[str, int], params: dict[str, Any], measurements: dict[str, Any],
                 technique: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """Text of one report: ``{findings (text), impression, report (both), labels (positive names)}``."""
    f = findings
    lines: list[str] = []
    impression: list[str] = []
    # The sections draw from ``rng`` in this order (a report is reproducible from its seed).
    for more, imp in (_technique(technique, rng), _airways(f, rng),
                      _heart_and_vessels(f, params, measurements, rng), _mediastinum(f, params, measurements, rng),
                      _lungs(f, params, measurements, rng), _pleura(f, params, measurements, rng)):
        lines += more
        impression += imp
    lines.append(_pick(rng, ["Visualised upper abdominal organs are unremarkable.",
                             "Limited views of the upper abdomen show no abnormality.", ""]))
    body = " ".join(line for line in lines if line)
    if not impression:
        impression = [_pick(rng, ["No acute cardiopulmonary abnormality.", "Normal chest CT.",
                                  "No relevant abnormal findings identified in the current examination."])]
    impression_text = " ".join(impression)
    present = [name for name in FINDINGS if f[name]]
    return {"findings": body, "impression": impression_text,
            "report": f"Findings: {body}\nImpression: {impression_text}", "labels": present}
