"""Evaluation figures: metric bars with CIs (paper Fig. 2 layout), data-fraction curves (Fig. 4),
MLP vs Q-Former (Fig. 5), ROC curves and Kaplan-Meier curves by predicted risk group.

Built with matplotlib's object API (``matplotlib.figure.Figure`` + Agg canvas), so nothing touches
pyplot's global state or needs a display. Every function writes one PNG and returns its path.
Tables are long-format pandas DataFrames with columns ``value, ci_low, ci_high`` plus grouping
columns, as produced by :mod:`voxelfm.probes.compare` and :mod:`voxelfm.probes.fractions`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from voxelfm.core.errors import InputValidationError

_COLOURS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def _save(fig: Any, path: str | os.PathLike[str]) -> Path:
    from voxelfm.core.atomic import atomic_save

    out = Path(path)
    atomic_save(out, lambda tmp: fig.savefig(tmp, format="png"))
    return out


def _require(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputValidationError(f"{what}: table lacks column(s) {missing}")


def _yerr(sub: pd.DataFrame) -> np.ndarray:
    v = sub["value"].to_numpy(dtype=float)
    lo = sub["ci_low"].to_numpy(dtype=float)
    hi = sub["ci_high"].to_numpy(dtype=float)
    return np.nan_to_num(np.vstack([np.clip(v - lo, 0, None), np.clip(hi - v, 0, None)]))


def metric_bars(table: pd.DataFrame, path: str | os.PathLike[str], *, group: str = "backbone",
                title: str | None = None) -> Path:
    """Bars with 95% CIs: one panel per ``category`` (or task), one bar per task × ``group``.

    ``table`` needs ``task, metric, value, ci_low, ci_high`` and optionally ``category`` and the
    ``group`` column (e.g. backbone). Mirrors the paper's Fig. 2 (tasks grouped by category).
    """
    _require(table, ["task", "metric", "value", "ci_low", "ci_high"], "metric_bars")
    df = table.copy()
    if "category" not in df.columns:
        df["category"] = df["task"]
    if group not in df.columns:
        df[group] = "value"
    categories = list(dict.fromkeys(df["category"]))
    groups = list(dict.fromkeys(df[group]))
    ncol = min(4, len(categories))
    nrow = math.ceil(len(categories) / ncol)
    fig = _figure(3.2 * ncol, 2.8 * nrow)
    axes = np.atleast_1d(fig.subplots(nrow, ncol, squeeze=False)).ravel()
    width = 0.8 / max(1, len(groups))
    for ax, cat in zip(axes, categories, strict=False):
        sub = df[df["category"] == cat]
        labels = list(dict.fromkeys(sub["task"] + "\n" + sub["metric"]))
        x = np.arange(len(labels))
        for gi, g in enumerate(groups):
            part = sub[sub[group] == g]
            pos = [labels.index(t + "\n" + m) for t, m in zip(part["task"], part["metric"], strict=True)]
            ax.bar(x[pos] + (gi - (len(groups) - 1) / 2) * width, part["value"].astype(float), width,
                   yerr=_yerr(part), capsize=3, color=_COLOURS[gi % len(_COLOURS)], label=str(g))
        ax.set_xticks(x, labels, fontsize=7)
        ax.set_title(str(cat), fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
    for ax in axes[len(categories):]:
        ax.set_visible(False)
    if len(groups) > 1:
        axes[0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def fraction_curves(table: pd.DataFrame, path: str | os.PathLike[str], *, metric: str | None = None,
                    group: str = "backbone") -> Path:
    """Metric vs training fraction: mean over seeds, with a band from the per-seed spread and the
    mean bootstrap CI, one line per ``group`` (paper Fig. 4)."""
    _require(table, ["fraction", "value"], "fraction_curves")
    df = table if metric is None or "metric" not in table.columns else table[table["metric"] == metric]
    if df.empty:
        raise InputValidationError(f"fraction_curves: no rows for metric {metric!r}")
    if group not in df.columns:
        df = df.assign(**{group: "value"})
    fig = _figure(4.5, 3.3)
    ax = fig.subplots()
    for gi, (g, sub) in enumerate(df.groupby(group, sort=False)):
        agg = sub.groupby("fraction").agg(mean=("value", "mean"), lo=("value", "min"), hi=("value", "max"))
        if {"ci_low", "ci_high"} <= set(sub.columns):
            ci = sub.groupby("fraction")[["ci_low", "ci_high"]].mean()
            agg["lo"] = np.fmin(agg["lo"], ci["ci_low"])
            agg["hi"] = np.fmax(agg["hi"], ci["ci_high"])
        c = _COLOURS[gi % len(_COLOURS)]
        ax.plot(agg.index * 100, agg["mean"], marker="o", color=c, label=str(g))
        ax.fill_between(agg.index * 100, agg["lo"], agg["hi"], color=c, alpha=0.2)
        ax.scatter(sub["fraction"] * 100, sub["value"], color=c, s=8, alpha=0.5)
    ax.set_xlabel("training data (%)")
    ax.set_ylabel(metric or "metric")
    ax.legend(fontsize=8)
    return _save(fig, path)


def head_comparison(table: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """MLP on CLS vs Q-Former on patch tokens, per task, with CIs (paper Fig. 5 left)."""
    _require(table, ["task", "head", "value", "ci_low", "ci_high"], "head_comparison")
    df = table.copy()
    if "metric" in df.columns:
        df["task"] = df["task"] + "\n" + df["metric"]
    df["category"] = "MLP (CLS) vs Q-Former (patches)"
    return metric_bars(df.assign(metric=""), path, group="head")


def roc_curves(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str | os.PathLike[str],
               title: str | None = None) -> Path:
    """ROC curves ``{name: (y_true, score)}`` with their AUROC in the legend."""
    from voxelfm.metrics.classification import auroc, roc_curve_points

    fig = _figure(4.0, 4.0)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    for i, (name, (y, s)) in enumerate(curves.items()):
        try:
            auc = auroc(y, s)
            fpr, tpr = roc_curve_points(y, s)
        except ValueError:
            continue  # one class only: no curve
        ax.plot(fpr, tpr, color=_COLOURS[i % len(_COLOURS)], label=f"{name} (AUROC {auc:.3f})")
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.set_aspect("equal")
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def kaplan_meier(time: np.ndarray, event: np.ndarray, group: np.ndarray, path: str | os.PathLike[str],
                 title: str | None = None) -> Path:
    """Kaplan-Meier curves per predicted risk group, with the log-rank p-value (lifelines)."""
    from lifelines import KaplanMeierFitter
    from lifelines.statistics import multivariate_logrank_test

    t = np.asarray(time, dtype=float)
    e = np.asarray(event).astype(int)
    g = np.asarray(group).astype(str)
    fig = _figure(4.5, 3.3)
    ax = fig.subplots()
    for i, name in enumerate(sorted(set(g))):
        sel = g == name
        km = KaplanMeierFitter(label=f"{name} risk (n={int(sel.sum())})").fit(t[sel], e[sel])
        km.plot_survival_function(ax=ax, ci_show=True, color=_COLOURS[i % len(_COLOURS)])
    if len(set(g)) > 1:
        p = multivariate_logrank_test(t, g, e).p_value
        ax.text(0.02, 0.04, f"log-rank p = {p:.3g}", transform=ax.transAxes, fontsize=8)
    ax.set_xlabel("time")
    ax.set_ylabel("survival probability")
    if title:
        ax.set_title(title, fontsize=9)
    return _save(fig, path)


_HEADLINE = ("auroc", "auprc", "f1@0.5", "mae", "r2", "c_index_harrell", "c_index_uno", "recall@1", "recall@5",
             "recall@10", "map", "mean_error_mm", "dice_macro", "dice_micro")


def run_figures(result: Any, directory: str | os.PathLike[str]) -> list[Path]:
    """Figures of one probe run: headline metric bars, ROC curves, Kaplan-Meier by risk group."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    rows = []
    for name, ci in result.metrics.items():
        leaf = name.split("/")[-1]
        if (leaf in _HEADLINE or leaf.startswith(("td_auroc", "hit_rate"))) and (
                "/" not in name or name.startswith(("macro/", "same_patient/"))) and math.isfinite(ci.value):
            rows.append({"task": result.task, "metric": name, "value": ci.value, "ci_low": ci.ci_low,
                         "ci_high": ci.ci_high})
    if rows:
        table = pd.DataFrame(rows)
        table["category"] = result.task
        written.append(metric_bars(table, out / "metrics.png", title=f"{result.task} ({result.head})"))
    roc = result.output.extras.get("roc")
    if roc:
        written.append(roc_curves(roc, out / "roc.png", title=f"{result.task} test ROC"))
    if result.task == "survival":
        pred = result.predictions[result.predictions["split"] == "test"]
        time_col, event_col = result.output.extras["columns"]
        written.append(kaplan_meier(pred[time_col], pred[event_col], pred["risk_group"], out / "kaplan_meier.png",
                                    title="test set by predicted risk (cut-off: median validation risk)"))
    return written


__all__ = ["fraction_curves", "head_comparison", "kaplan_meier", "metric_bars", "roc_curves", "run_figures"]
