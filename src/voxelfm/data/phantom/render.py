"""Paint one scan: body wall, bones, lungs with vessels and airways, mediastinum, upper abdomen,
the scanner table, then the patient's findings. Produces HU (before the scanner model), the label
map and the measurements that need the rendered scene (volumes, calcium score, nodule centre).

Painting order matters: a later structure displaces an earlier one (and takes over its label),
the way the heart and aorta indent the lungs. The painters live in :mod:`voxelfm.data.phantom.paint`
(one module per part of the body); they read a :class:`Scene` that is complete before the first
stroke and return what they measure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from voxelfm.data.phantom.canvas import Canvas
from voxelfm.data.phantom.constants import LABEL_IDS
from voxelfm.data.phantom.paint.body import paint_abdomen, paint_body, paint_table
from voxelfm.data.phantom.paint.bones import paint_ribs, paint_spine, paint_sternum
from voxelfm.data.phantom.paint.findings import (
    add_metal_streaks,
    coronary_calcium_score,
    paint_calcifications,
    paint_medical_material,
    paint_nodules,
    paint_parenchymal_disease,
)
from voxelfm.data.phantom.paint.lungs import grow_trees, paint_bronchi, paint_lungs, paint_vessels
from voxelfm.data.phantom.paint.mediastinum import (
    paint_airways_central,
    paint_esophagus,
    paint_great_vessels,
    paint_heart,
    paint_nodes,
)
from voxelfm.data.phantom.paint.scene import Scene, build_scene

__all__ = ["Rendered", "Scene", "add_metal_streaks", "build_scene", "coronary_calcium_score", "render"]


@dataclass(frozen=True)
class Rendered:
    """What painting measured: ``measurements`` (volumes, nodules, calcium score, largest node; the
    keys :func:`voxelfm.data.phantom.reports.write_report` reads) and the metal centres (streaks)."""

    measurements: dict[str, Any]
    metal_centres: list[np.ndarray] = field(default_factory=list)


def render(cv: Canvas, sc: Scene) -> Rendered:
    """Paint the whole scene into ``cv`` (HU before the scanner model, labels final)."""
    m: dict[str, Any] = {}
    paint_table(cv, sc)
    paint_body(cv, sc)
    paint_abdomen(cv, sc)
    boxes = paint_lungs(cv, sc)
    trees = grow_trees(sc)
    paint_vessels(cv, sc, trees, boxes)
    paint_parenchymal_disease(cv, sc, boxes)
    nodules = paint_nodules(cv, sc)
    if nodules is not None:
        m["nodules"] = nodules
    m["largest_nodule_mm"] = float(max((n[0] for n in nodules or []), default=0.0))
    paint_bronchi(cv, sc, trees, boxes)
    paint_heart(cv, sc)
    paint_great_vessels(cv, sc)
    paint_esophagus(cv, sc)
    paint_airways_central(cv, sc)
    m["largest_node_mm"] = paint_nodes(cv, sc)
    paint_spine(cv, sc)
    paint_ribs(cv, sc)
    paint_sternum(cv, sc)
    m["calcium_score"] = paint_calcifications(cv, sc)
    metal = paint_medical_material(cv, sc)
    m.update(label_volumes(cv))
    return Rendered(m, metal)


def label_volumes(cv: Canvas) -> dict[str, float]:
    """Lung (L), heart and effusion (mL) volumes counted on the final label map."""
    voxel_ml = float(np.prod(cv.geometry.spacing)) / 1000.0
    counts = np.bincount(cv.labels.ravel().astype(np.int64), minlength=max(LABEL_IDS.values()) + 1)
    return {
        "lung_volume_l": round((counts[LABEL_IDS["lung_left"]] + counts[LABEL_IDS["lung_right"]]) * voxel_ml / 1000.0, 3),
        "heart_volume_ml": round(counts[LABEL_IDS["heart"]] * voxel_ml, 1),
        "effusion_volume_ml": round(counts[LABEL_IDS["effusion"]] * voxel_ml, 1),
    }
