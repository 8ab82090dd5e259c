"""Picture panels: retrieval thumbnails with their neighbours, segmentation overlays, PCA maps.

Each function takes plain arrays (already windowed slices, label slices, PCA colours) and returns
PNG bytes, so it can be tested without a model (the demo report draws its pictures with them).
Metric charts (bars, curves) are in :mod:`voxelfm.viz.plots`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from voxelfm.core.errors import InputValidationError
from voxelfm.viz.html import figure_to_png
from voxelfm.viz.slices import blend_rgb, label_palette, overlay_labels

if TYPE_CHECKING:
    from voxelfm.core.types import VoxelFeatures
    from voxelfm.preprocess import PreprocessedVolume


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)  # headless: the demo runs on servers without a display
    import matplotlib.pyplot as plt

    return plt


@dataclass(frozen=True)
class Neighbour:
    """One retrieved scan: its thumbnail, id, cosine similarity and whether it matches the query."""

    image: np.ndarray  # (H, W, 3) uint8
    scan_id: str
    similarity: float
    match: bool
    findings: str = ""


def retrieval_figure(
    query_image: np.ndarray, query_id: str, query_findings: str, neighbours: Sequence[Neighbour],
) -> bytes:
    """A query thumbnail followed by its ranked neighbours, each titled with similarity and match."""
    plt = _plt()
    n = 1 + len(neighbours)
    fig, axes = plt.subplots(1, n, figsize=(2.3 * n, 2.9), squeeze=False)
    axes = axes[0]
    axes[0].imshow(query_image)
    axes[0].set_title(f"query {query_id}", fontsize=9, fontweight="bold")
    axes[0].set_xlabel(_wrap(query_findings), fontsize=7)
    for rank, (ax, nb) in enumerate(zip(axes[1:], neighbours, strict=True), start=1):
        ax.imshow(nb.image)
        mark = "✓" if nb.match else "✗"
        colour = "#1a7f37" if nb.match else "#b42318"
        ax.set_title(f"#{rank} {nb.scan_id}\ncos {nb.similarity:.3f} {mark}", fontsize=8, color=colour)
        ax.set_xlabel(_wrap(nb.findings), fontsize=7)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return figure_to_png(fig)


def retrieval_example(example: Mapping[str, Any], thumbnail: Callable[[str], np.ndarray],
                      findings: Callable[[str], str]) -> tuple[bytes, int]:
    """:func:`retrieval_figure` of one :func:`voxelfm.probes.retrieval.neighbour_examples` entry (a
    scan's thumbnail and findings text from the caller's functions), and how many neighbours match."""
    neighbours = [Neighbour(thumbnail(str(nb["scan_id"])), str(nb["scan_id"]), float(nb["similarity"]),
                            bool(nb["match"]), findings(str(nb["scan_id"]))) for nb in example["neighbours"]]
    query = str(example["query"])
    return retrieval_figure(thumbnail(query), query, findings(query), neighbours), sum(nb.match for nb in neighbours)


def _wrap(text: str, width: int = 28) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text or "no findings", width)[:4])


def segmentation_figure(
    grey: np.ndarray, truth: np.ndarray, predicted: np.ndarray, label_names: Mapping[int, str],
    *, title: str = "",
) -> bytes:
    """CT slice, ground truth overlay and predicted overlay side by side, with a legend."""
    plt = _plt()
    n_labels = int(max(truth.max(initial=0), predicted.max(initial=0), max(label_names, default=0)))
    palette = label_palette(n_labels)
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.9))
    axes[0].imshow(grey, cmap="gray", vmin=0, vmax=255)
    axes[0].set_title("CT", fontsize=10)
    axes[1].imshow(overlay_labels(grey, truth, palette=palette))
    axes[1].set_title("ground truth", fontsize=10)
    axes[2].imshow(overlay_labels(grey, predicted, palette=palette))
    axes[2].set_title("probe prediction", fontsize=10)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    present = sorted(set(np.unique(truth).tolist()) | set(np.unique(predicted).tolist()) - {0})
    handles = [
        plt.Rectangle((0, 0), 1, 1, color=palette[i] / 255.0, label=label_names.get(i, f"label {i}"))
        for i in present if i > 0
    ]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(6, len(handles)), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.08 if handles else 0, 1, 1))
    return figure_to_png(fig)


@dataclass(frozen=True)
class PcaPanel:
    """One scan's slice with a PCA colour map per backbone."""

    scan_id: str
    grey: np.ndarray  # (H, W) uint8 windowed CT slice
    colours: Mapping[str, np.ndarray]  # backbone → (H, W, 3) float in [0, 1]
    mask: np.ndarray | None = None  # (H, W) bool: where to draw colours (the body)


def pca_figure(panels: Sequence[PcaPanel], *, alpha: float = 0.65) -> bytes:
    """Rows = scans; columns = CT, then the PCA map of each backbone over the same slice."""
    plt = _plt()
    backbones = list(panels[0].colours) if panels else []
    ncols = 1 + len(backbones)
    # Size rows by the slice aspect so coronal slices do not leave empty bands between rows.
    aspect = max(p.grey.shape[0] / p.grey.shape[1] for p in panels) if panels else 1.0
    fig, axes = plt.subplots(len(panels), ncols, figsize=(3.2 * ncols, 3.2 * aspect * len(panels) + 0.4),
                             squeeze=False)
    for r, panel in enumerate(panels):
        axes[r, 0].imshow(panel.grey, cmap="gray", vmin=0, vmax=255)
        axes[r, 0].set_ylabel(panel.scan_id, fontsize=9)
        if r == 0:
            axes[r, 0].set_title("CT", fontsize=10)
        for c, name in enumerate(backbones, start=1):
            axes[r, c].imshow(blend_rgb(panel.grey, panel.colours[name], alpha=alpha, mask=panel.mask))
            if r == 0:
                axes[r, c].set_title(f"PCA of patch features: {name}", fontsize=10)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return figure_to_png(fig)


def most_informative_slice(labels: np.ndarray) -> int:
    """Axial slice of a (z, y, x) label map showing the most distinct structures (ties → most labelled voxels)."""
    counts = [(len(np.unique(s)), int((s > 0).sum())) for s in labels]
    return int(max(range(len(counts)), key=lambda k: counts[k]))


def segmentation_overlay(hu: np.ndarray, truth: np.ndarray, predicted: np.ndarray, label_names: Mapping[int, str],
                         *, name: str = "") -> bytes:
    """:func:`segmentation_figure` of 3D volumes (z, y, x) on the axial slice with the most structures."""
    from voxelfm.viz.slices import take_slice, window_hu

    if predicted.shape != truth.shape or hu.shape != truth.shape:
        raise InputValidationError(f"{name}: prediction {predicted.shape}, labels {truth.shape} and CT {hu.shape} differ")
    k = most_informative_slice(truth)
    return segmentation_figure(window_hu(take_slice(hu, "axial", k), "mediastinum"), take_slice(truth, "axial", k),
                               take_slice(predicted, "axial", k), label_names, title=f"{name}, axial slice {k}")


def pca_maps(volumes: Mapping[str, PreprocessedVolume], features: Mapping[str, Mapping[str, VoxelFeatures]], *,
             axes: Sequence[str] = ("axial", "coronal"), seed: int = 0) -> dict[str, bytes]:
    """One figure per slice axis: rows = scans (``volumes``: scan id → preprocessed volume), columns =
    the CT middle slice, then the first three principal components of each source's patch tokens
    (``features``: source → scan id → features), fitted per source on the body patches of these scans."""
    from voxelfm.viz.pca import body_mask, fit_patch_pca, patch_foreground, sample_grid_on_slice
    from voxelfm.viz.slices import take_slice, window_hu

    colours: dict[str, dict[tuple[str, str], np.ndarray]] = {}
    for source, feats in features.items():
        fg = [patch_foreground(volumes[s].hu, volumes[s].geometry, feats[s].patch_geometry) for s in volumes]
        pca = fit_patch_pca([feats[s].patch for s in volumes], foreground=fg, seed=seed)
        rgb = {s: pca.transform(feats[s].patch) for s in volumes}
        colours[source] = {(s, axis): sample_grid_on_slice(rgb[s], feats[s].patch_geometry, volumes[s].geometry,
                                                           axis=axis) for s in volumes for axis in axes}
    figures = {}
    for axis in axes:
        panels = []
        for s, vol in volumes.items():
            hu_slice = take_slice(vol.hu, axis)
            panels.append(PcaPanel(s, window_hu(hu_slice, "lung"), {b: colours[b][(s, axis)] for b in features},
                                   mask=body_mask(hu_slice)))
        figures[axis] = pca_figure(panels)
    return figures
