"""The results report: tables with 95% CIs, paired differences, CI bars, data-fraction curves and
head comparisons, built from :class:`~voxelfm.viz.result_rows.ResultRow` rows.

The section writers below fill :class:`~voxelfm.viz.html.Section` objects; ``voxelfm evaluate``
(:func:`write_suite_report`: ``report.html`` from a suite's output folder) and the demo's report both
use them, so a results table or a paired difference reads the same everywhere. A section without
data says why instead of disappearing.
"""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from voxelfm.metrics.bootstrap import DifferenceCI, MetricCI
from voxelfm.viz.html import Cell, HtmlReport, Section
from voxelfm.viz.result_rows import (
    ResultRow,
    as_ci,
    clear_direction,
    difference_labels,
    row_mdd,
    rows_from_suite,
    verdict,
)

#: Metric shown for each task in the summary figures (the paper's headline metric per category).
HEADLINE: dict[str, list[str]] = {
    "classification": ["macro/auroc", "auroc"],
    "knn": ["macro/auroc", "auroc"],
    "regression": ["r2", "mae_sd"],
    "survival": ["c_index_harrell"],
    "retrieval": ["macro/recall@10", "same_patient/recall@10"],
    "localisation": ["mean_error_mm", "mean_error_norm"],
    "segmentation": ["dice_macro"],
}


# -- formatting --------------------------------------------------------------------------------
def fmt_ci(ci: MetricCI | DifferenceCI | None, digits: int = 3) -> str:
    """``0.812 [0.741, 0.880]``; the value alone when the CI is undefined; ``n/a`` for a missing
    value (e.g. a probe that failed) and ``—`` for no entry at all."""
    if ci is None:
        return "—"
    if not math.isfinite(ci.value):
        return "n/a"
    text = f"{ci.value:.{digits}f}"
    if math.isfinite(ci.ci_low) and math.isfinite(ci.ci_high):
        text += f" [{ci.ci_low:.{digits}f}, {ci.ci_high:.{digits}f}]"
    return text


def metric_label(row: ResultRow) -> str:
    return f"{row.metric} {'↑' if row.higher_is_better else '↓'}"


def difference_cell(row: ResultRow, label: str) -> Cell:
    """A paired difference, green when its CI excludes 0 in favour of the first side, red for the second."""
    d = row.differences.get(label)
    if d is None or not math.isfinite(d.value):
        return Cell("—", "num")
    sign = clear_direction(row, label)
    return Cell(fmt_ci(d), "num" + {1: " good", -1: " bad", 0: ""}[sign])


def no_data(sec: Section, what: str) -> None:
    sec.callout(f"Not available in this run: {what}", kind="note")


def figure_or_note(sec: Section, png: bytes | None, caption: str, what: str) -> None:
    if png:
        sec.figure(png, caption=caption)
    else:
        no_data(sec, what)


# -- sections ----------------------------------------------------------------------------------
def gallery(sec: Section, pictures: Sequence[tuple[bytes, str]] | None, text: str, what: str) -> None:
    """An introduction and captioned pictures (PNG, caption), or a note that ``what`` is missing."""
    if not pictures:
        no_data(sec, what)
        return
    sec.paragraph(text)
    for png, caption in pictures:
        sec.figure(png, caption=caption)


def timings_table(sec: Section, wall: Mapping[str, Any], cpu: Mapping[str, Any] | None = None, *,
                  caption: str | None = None, table_id: str | None = None) -> None:
    """Wall and CPU seconds of each stage (as :mod:`voxelfm.core.stages` records them) and their totals;
    ``—`` where a stage has no CPU time."""
    cpu = cpu or {}

    def cpu_cell(v: Any) -> Cell:
        return Cell("—" if v is None else f"{float(v):.0f}", "num")

    total_cpu = sum(float(v) for v in cpu.values()) if cpu else None
    sec.table(["stage", "wall time (s)", "CPU time (s)"],
              [[k, Cell(f"{float(v):.1f}", "num"), cpu_cell(cpu.get(k))] for k, v in wall.items()]
              + [[Cell("total", "group"), Cell(f"{sum(float(v) for v in wall.values()):.1f}", "num"),
                  cpu_cell(total_cpu)]], caption=caption, table_id=table_id)


def results_table(sec: Section, rows: Sequence[ResultRow], sources: Mapping[str, str], *,
                  categories: Sequence[str] = (), table_id: str = "fig2-table") -> None:
    """Rows grouped by category (``categories`` first, in order); one column per source
    (``{key: column title}``), the number of test units and the row's note."""
    if not rows:
        no_data(sec, "no task results")
        return
    by_cat: dict[str, list[ResultRow]] = {}
    for r in rows:
        by_cat.setdefault(r.category, []).append(r)
    ordered = [c for c in categories if c in by_cat] + [c for c in by_cat if c not in categories]
    body = [[Cell(cat if i == 0 else "", "group"), r.task, metric_label(r),
             *[Cell(fmt_ci(r.values.get(s)), "num") for s in sources], Cell(str(r.n() or ""), "num"),
             Cell(r.detail, "muted")]
            for cat in ordered for i, r in enumerate(by_cat[cat])]
    sec.table(["category", "task", "metric", *sources.values(), "n test", "note"], body, table_id=table_id)
    missing = [c for c in categories if c not in by_cat]
    if missing:
        sec.callout("No result in this run for: " + ", ".join(missing))


def differences_table(sec: Section, rows: Sequence[ResultRow], labels: Mapping[str, str] | None = None, *,
                      table_id: str = "paired-table") -> list[ResultRow]:
    """Paired differences (``{label: column title}``, default every label) with the smallest true
    difference the test set would detect with 80% power; returns the rows shown."""
    labels = labels or {k: k for k in difference_labels(rows)}
    shown = [r for r in rows if any(k in r.differences for k in labels)]
    if not shown:
        no_data(sec, "no paired differences were computed")
        return shown
    sec.table(["category", "task", "metric", *[f"{t} [95% CI]" for t in labels.values()], "detectable difference"],
              [[r.category, r.task, metric_label(r), *[difference_cell(r, k) for k in labels],
                Cell("—" if row_mdd(r) is None else f"±{row_mdd(r):.3f}", "num")] for r in shown],
              table_id=table_id)
    return shown


PAIRED_TEXT = ("95% CI from a paired bootstrap (both sides resampled with the same test-unit indices). Green: the "
               "CI excludes 0 in favour of the first side; red: in favour of the second; plain: no clear "
               "difference. The last column is the smallest true difference this test set would detect with 80% "
               "power at the 5% level (2.8 paired-bootstrap standard errors).")


def verdict_lines(rows: Sequence[ResultRow], names: Mapping[str, str], *, examples: int = 5) -> list[str]:
    """One sentence per difference label (``{label: "Pretrained vs random init"}``): clear wins and
    losses with their paired CIs."""
    lines = []
    for label, counts in verdict(rows, names).items():
        if not counts["n"]:
            continue
        parts = []
        for sign, word in ((1, "better"), (-1, "worse")):
            clear = [r for r in rows if clear_direction(r, label) == sign]
            if clear:
                parts.append(f"{word} on " + "; ".join(
                    f"{r.task} ({r.metric}) {fmt_ci(r.differences[label])}" for r in clear[:examples])
                    + ("; …" if len(clear) > examples else ""))
        lines.append(f"{names[label]}: clearly better on {counts['better']} of {counts['n']} metrics, clearly worse "
                     f"on {counts['worse']}, no clear difference on the rest ({label}, paired-bootstrap 95% CIs)"
                     + (": " + ". ".join(parts) + "." if parts else "."))
    return lines


def comparison_table(sec: Section, rows: Sequence[ResultRow], table_id: str) -> None:
    """Rows whose ``values`` hold variants (``pretrained · MLP``, ``pretrained · Q-Former``), each
    with its paired difference and what it is the difference of."""
    keys = list(dict.fromkeys(k for r in rows for k in r.values))
    body = []
    for r in rows:
        label = next(iter(r.differences), "")
        body.append([r.task, metric_label(r), *[Cell(fmt_ci(r.values.get(k)), "num") for k in keys],
                     difference_cell(r, label), Cell(r.detail or label, "muted")])
    sec.table(["task", "metric", *keys, "difference [95% CI]", "difference of"], body, table_id=table_id)


# -- charts ------------------------------------------------------------------------------------
def _short(text: str, width: int = 22) -> str:
    return "\n".join(textwrap.wrap(text, width)[:3])


def ci_table(rows: Iterable[ResultRow], group: str = "backbone", *, split: str | None = None,
             wrap: int = 22) -> pd.DataFrame:
    """Long table (category, task, metric, <group>, value, ci_low, ci_high) of the rows' values (task
    names wrapped at ``wrap`` characters); with ``split`` a value key ``"a · b"`` becomes task
    ``"a: <task>"`` and group ``b``."""
    records = []
    for r in rows:
        for key, ci in r.values.items():
            if not math.isfinite(ci.value):
                continue
            prefix, _, variant = key.partition(split) if split and split in key else ("", "", key)
            records.append({"category": r.category, "task": _short(f"{prefix}: {r.task}" if prefix else r.task, wrap),
                            "metric": r.metric, group: variant, "value": ci.value, "ci_low": ci.ci_low,
                            "ci_high": ci.ci_high})
    return pd.DataFrame(records)


def draw(plot: Callable[[pd.DataFrame, Path], Path], table: pd.DataFrame, path: str | os.PathLike[str]) -> bytes | None:
    """Write a chart of ``table`` to ``path`` and return its PNG bytes (``None`` for an empty table)."""
    if table.empty:
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return plot(table, path).read_bytes()


def bars_png(rows: Sequence[ResultRow], path: str | os.PathLike[str], *, group: str = "backbone",
             title: str | None = None, wrap: int = 22) -> bytes | None:
    """Each row's values as bars with 95% CIs, one panel per category (paper Fig. 2)."""
    from voxelfm.viz.plots import metric_bars

    return draw(lambda t, p: metric_bars(t, p, group=group, title=title), ci_table(rows, group, wrap=wrap), path)


def heads_png(rows: Sequence[ResultRow], path: str | os.PathLike[str]) -> bytes | None:
    """Rows whose value keys are ``"<source> · <head>"`` as a head comparison (paper Fig. 5)."""
    from voxelfm.viz.plots import head_comparison

    return draw(head_comparison, ci_table(rows, "head", split=" · "), path)


def fractions_png(points: pd.DataFrame, path: str | os.PathLike[str], *, metric: str | None = None) -> bytes | None:
    """Data-fraction curves (``fraction, backbone, value, ci_low, ci_high`` rows; paper Fig. 4)."""
    from voxelfm.viz.plots import fraction_curves

    return draw(lambda t, p: fraction_curves(t, p, metric=metric), points, path)


# -- the report of ``voxelfm evaluate`` ------------------------------------------------------------
SUITE_SECTIONS: tuple[tuple[str, str], ...] = (
    ("results-table", "Results by task"),
    ("paired-difference", "Paired differences against the reference"),
    ("bars", "Results with 95% confidence intervals"),
    ("data-fraction", "Data-fraction curves"),
    ("heads", "Head comparison"),
    ("errors", "Tasks that failed"),
    ("run-details", "What was compared"),
)


def _suite_heads(summary: pd.DataFrame, headline: Mapping[str, Sequence[str]]) -> dict[str, list[ResultRow]]:
    """Per store: one row per task that ran several heads, values keyed ``"<store> · <head>"``."""
    out: dict[str, list[ResultRow]] = {}
    for (name, task, store), sub in summary.groupby(["name", "task", "backbone"], sort=False):
        metric = next((m for m in headline.get(task, ()) if m in set(sub["metric"])), None)
        hit = sub[sub["metric"] == metric]
        if metric is not None and hit["head"].nunique() > 1:
            values = {f"{store} · {rec['head']}": as_ci(rec) for rec in hit.to_dict(orient="records")}
            out.setdefault(str(store), []).append(ResultRow(str(task), str(name), metric, values=values))
    return out


def suite_report(out_dir: str | os.PathLike[str], *, headline: Mapping[str, Sequence[str]] | None = None) -> HtmlReport:
    """The report of a ``voxelfm evaluate`` output folder (``summary.json`` and ``fractions_*.csv``);
    figures are also written to ``figures/``. A missing ``summary.json`` is a ``DataError`` naming it."""
    from voxelfm.core.readers import read_json

    out = Path(out_dir)
    headline = headline or HEADLINE
    data = read_json(out / "summary.json", what="suite summary (run voxelfm evaluate first)")
    summary, reference = pd.DataFrame(data.get("summary") or []), str(data.get("reference", ""))
    rows = rows_from_suite(data.get("summary") or [], data.get("differences") or [], headline)
    stores = {str(s): str(s) for s in (data.get("stores") or {})}
    report = HtmlReport("voxelfm evaluation report", subtitle=f"{len(rows)} task runs · {len(stores)} feature "
                        f"stores · reference {reference} · {out.resolve()}")
    secs = {sid: report.section(sid, title) for sid, title in SUITE_SECTIONS}
    secs["results-table"].paragraph("Each task's headline metric on the held-out test split with its 95% "
                                    "percentile-bootstrap CI, one column per store. ↑ = higher is better.")
    results_table(secs["results-table"], rows, stores)
    secs["paired-difference"].paragraph(f"Difference <store> − {reference} on the same test units. " + PAIRED_TEXT)
    shown = differences_table(secs["paired-difference"], rows)
    names = {label: f"{label.split(' − ')[0]} vs {reference}" for label in difference_labels(shown)}
    secs["paired-difference"].bullets(verdict_lines(shown, names))
    figures = out / "figures"
    figure_or_note(secs["bars"], bars_png(rows, figures / "tasks.png", title="test metrics with 95% CIs"),
                   "Each task's headline metric per store; whiskers are 95% CIs.", "no task results to draw")
    fraction_files = sorted(out.glob("fractions_*.csv"))
    for csv in fraction_files:
        table = pd.read_csv(csv)
        task = str(table["task"].iloc[0]) if "task" in table.columns and len(table) else ""
        metric = next((m for m in headline.get(task, ()) if m in set(table.get("metric", ()))), None)
        png = fractions_png(table, figures / f"{csv.stem}.png", metric=metric) if metric else None
        figure_or_note(secs["data-fraction"], png, f"{csv.stem.removeprefix('fractions_')}: {metric} against the "
                       "fraction of training labels (mean over seeds; band: seed spread and mean 95% CI).",
                       f"{csv.name} has no headline metric")
    if not fraction_files:
        no_data(secs["data-fraction"], "no task of the suite lists 'fractions'")
    heads = _suite_heads(summary, headline) if len(summary) else {}
    for store, head_rows in heads.items():
        figure_or_note(secs["heads"], heads_png(head_rows, figures / f"heads_{store}.png"),
                       f"Heads compared on {store} (95% CIs).", f"head comparison on {store}")
    if not heads:
        no_data(secs["heads"], "no task ran more than one head (list several under 'heads')")
    errors = data.get("errors") or []
    if errors:
        secs["errors"].table(["task", "head", "store", "error"],
                             [[e.get("name", ""), e.get("head", ""), e.get("backbone", ""), e.get("error", "")]
                              for e in errors])
    else:
        secs["errors"].paragraph("Every task ran on every store.", muted=True)
    secs["run-details"].table(["store", "path"], [[k, v] for k, v in (data.get("stores") or {}).items()])
    secs["run-details"].paragraph("Every metric of every run is in summary.csv and differences.csv next to "
                                  "this file.", muted=True)
    return report


def write_suite_report(out_dir: str | os.PathLike[str]) -> Path:
    """Write ``report.html`` (self-contained) into a ``voxelfm evaluate`` output folder."""
    path = Path(out_dir) / "report.html"
    suite_report(out_dir).write(path)
    return path


__all__ = ["PAIRED_TEXT", "SUITE_SECTIONS", "bars_png", "ci_table", "comparison_table", "difference_cell",
           "differences_table", "draw", "figure_or_note", "fmt_ci", "fractions_png", "gallery", "heads_png",
           "metric_label", "no_data", "results_table", "suite_report", "timings_table", "verdict_lines",
           "write_suite_report"]
