"""Compose the demo's ``report.html`` from ``results.json`` data and pre-rendered figures.

Kept apart from the stages so it can be tested with synthetic results: it only formats. Every
section of :data:`SECTIONS` is always present; a section without data says why it is empty
instead of disappearing, so a reader (and the test) can tell "not computed" from "forgotten".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from voxelfm.demo.layout import BACKBONE_NAMES
from voxelfm.demo.results import CATEGORIES, VERSUS_BASELINE, VERSUS_RANDOM, parse_rows
from voxelfm.viz.html import Cell, HtmlReport, Section
from voxelfm.viz.result_rows import ResultRow, as_ci, clear_direction, row_mdd
from voxelfm.viz.results_report import (
    PAIRED_TEXT,
    comparison_table,
    differences_table,
    figure_or_note,
    fmt_ci,
    gallery,
    no_data,
    results_table,
    timings_table,
    verdict_lines,
)

#: (id, title) of every section of the report, in order.
SECTIONS: tuple[tuple[str, str], ...] = (
    ("about", "What this report is (synthetic data)"),
    ("results-table", "Results by task (paper Fig. 2 layout)"),
    ("paired-difference", "Pretrained − random: paired differences"),
    ("bars", "Results with 95% confidence intervals"),
    ("data-fraction", "Data-fraction sweep (paper Fig. 4)"),
    ("heads", "MLP on CLS vs Q-Former on patch tokens (paper Fig. 5)"),
    ("inference-modes", "Full 3D vs chunked 2.5D inference (paper Fig. 5)"),
    ("comparators", "Comparator backbones (paper Fig. 2; random init, reduced)"),
    ("per-finding-f1", "Per-finding F1: probes vs generated reports (paper Fig. 3)"),
    ("report-examples", "Generated reports beside their references"),
    ("retrieval-examples", "Retrieval examples"),
    ("segmentation-overlays", "Segmentation overlays"),
    ("pca-maps", "PCA maps of patch features"),
    ("run-details", "How this run was made"),
)

#: Picture sections: (section id, figures key, what is missing when there are none).
GALLERIES = (("retrieval-examples", "retrieval", "retrieval examples"),
             ("segmentation-overlays", "segmentation", "segmentation overlays"), ("pca-maps", "pca", "PCA maps"))
GALLERY_TEXT = {
    "retrieval": "Query scans (left) and their nearest neighbours by cosine similarity of CLS tokens among the other "
                 "test scans; a ✓ marks a neighbour that shares at least one finding with the query (the label-match "
                 "criterion of the retrieval metric).",
    "segmentation": "Ground-truth label map and the segmentation probe's prediction (patch grid → 3D convolutional "
                    "decoder) over the same CT slice of test scans.",
    "pca": "The first three principal components of the patch tokens (fitted on body patches of several scans) shown "
           "as red, green and blue over the CT. Features that have learned anatomy give coherent colours per "
           "structure; random features mostly follow raw intensity.",
}
BACKBONE_LABELS = {"pretrained": "pretrained (SSL)", "random": "random init", "histogram": "HU histogram (no network)"}


def _cohort_settings(data: Mapping[str, Any]) -> str:
    """How the phantom's findings were drawn, when not at its default (docs/phantom.md)."""
    parts = []
    if data.get("prevalence") == "enriched":
        parts.append("findings enriched to about 30 % prevalence each")
    if data.get("conspicuity"):
        parts.append(f"finding sizes and densities at conspicuity {float(data['conspicuity']):g} "
                     "(towards the severe end of their clinical ranges, so a small model at this "
                     "resolution can see them)")
    return "; " + " and ".join(parts) if parts else ""


def _about(sec: Section, results: Mapping[str, Any], rows: Sequence[ResultRow]) -> None:
    """The first screen: what ran, on what data, what beat what (with CIs), what it cannot show."""
    data = results.get("data", {})
    splits = data.get("splits", {})
    pre = (results.get("backbones") or {}).get("pretrained", {})
    steps = pre.get("pretrain_steps")
    sec.callout(
        "All data in this report are synthetic. The CT scans are procedurally generated chest "
        "phantoms (voxelfm.data.phantom) with planted findings, and every label, report and survival "
        "time comes from the generator's known ground truth. No patient data were used."
    )
    sec.paragraph(
        f"What ran: {data.get('n_scans', '?')} scans of {data.get('n_patients', '?')} synthetic patients "
        f"(patient-level splits: train {splits.get('train', '?')}, validation {splits.get('val', '?')}, "
        f"test {splits.get('test', '?')}){_cohort_settings(data)}. Three frozen feature sources are compared: a "
        f"{pre.get('preset', 'ViT')} pretrained with self-supervision (no labels; voxelfm.ssl recipe "
        f"{pre.get('recipe', '?')}) on the training-split scans{f' for {steps} steps' if steps else ''}; "
        "the same architecture at "
        "random initialisation; and a non-learned baseline, HU histograms and intensity statistics of "
        "the whole volume and of every patch (what a probe can learn from the pixels without a "
        "network). Only the small probes train, each on the training split, selected on validation "
        "and scored once on test; every training stage is budgeted in steps or epochs, so the same "
        "size and seed give the same numbers on any machine."
    )
    sec.heading("What beat what")
    bullets = verdict_lines(rows, {VERSUS_RANDOM: "Pretrained vs random init",
                                   VERSUS_BASELINE: "Pretrained vs the HU-histogram baseline"})
    cls_row = next((r for r in rows if r.category == "classification"), None)
    if cls_row is not None:
        vals = ", ".join(f"{BACKBONE_LABELS.get(b, b)} {fmt_ci(cls_row.values.get(b))}" for b in BACKBONE_NAMES
                         if b in cls_row.values)
        bullets.append(f"Classification ({cls_row.task}, {cls_row.metric}): {vals}.")
    if bullets:
        sec.bullets(bullets)
    else:
        sec.paragraph("No paired comparison was computed in this run.", muted=True)
    mdds = sorted(m for m in (row_mdd(r) for r in rows if r.metric.endswith("AUROC")) if m is not None)
    sec.heading("What the numbers do not show")
    sec.bullets([
        "Differences smaller than the test set can detect: "
        + (f"for AUROC metrics about {mdds[len(mdds) // 2]:.3f} (median minimum detectable difference, 80% "
           f"power; per metric in the paired table) on {splits.get('test', '?')} test scans."
           if mdds else "see the last column of the paired table."),
        "Clinical performance: phantoms are far simpler than real CT.",
        "The published VoxelFM results: the real model was pretrained on over 137,000 CT studies on "
        "GPUs; this backbone is tiny and trained for minutes on a CPU.",
        "A comparison with other foundation models.",
        *((results.get("report_generation") or {}).get("reading_notes") or []),
    ])


def _paired(sec: Section, rows: Sequence[ResultRow]) -> None:
    sec.paragraph("Difference pretrained − random and pretrained − HU histogram on the same test scans. " + PAIRED_TEXT)
    shown = differences_table(sec, rows, {VERSUS_RANDOM: "pretrained − random",
                                          VERSUS_BASELINE: "pretrained − HU histogram"})
    if not shown:
        return
    wins = sum(1 for r in shown if clear_direction(r, VERSUS_RANDOM) > 0)
    losses = sum(1 for r in shown if clear_direction(r, VERSUS_RANDOM) < 0)
    sec.paragraph(f"Pretraining is clearly better than random init on {wins} of {len(shown)} metrics and "
                  f"clearly worse on {losses}.", muted=True)
    if wins <= losses:
        sec.callout(
            "This run shows no advantage of the pretrained backbone. Its DINO + iBOT pretraining (a few CPU "
            "minutes) is far from the hundreds of thousands of iterations self-supervised features are "
            "trained for; on the study's yardstick the same recipe beat its random-init twin by small "
            "margins only (docs/pretraining.md). "
            "Read this report as a check of the pipeline and of the evaluation protocol, not of the "
            "pretraining.", kind="note")


def _comparison_section(sec: Section, results: Mapping[str, Any], figures: Mapping[str, Any], key: str, text: str,
                        caption: str, what: str, table_id: str) -> None:
    """A comparison of two variants (results ``key``): what was compared, the table and its figure."""
    rows = parse_rows(results.get(key, []))
    if rows:
        sec.paragraph(text)
        comparison_table(sec, rows, table_id)
    figure_or_note(sec, figures.get(key), caption, what)


def _comparators(sec: Section, results: Mapping[str, Any]) -> None:
    rows = parse_rows(results.get("comparators", []))
    if not rows:  # off by default (it adds time), so not missing data: say how to turn it on
        sec.callout("Not requested (off by default): add the paper's comparator architectures at random init "
                    "with voxelfm demo --backbones m3d-clip,ct-clip,merlin,radfm", kind="note")
        return
    sec.paragraph("The paper's comparator architectures, added with --backbones: random initialisation and "
                  "hyper-parameters reduced for a CPU, each fed by its own preprocessing recipe; the same probes on "
                  "the same test scans. Differences are comparator − pretrained (the reference), paired bootstrap. "
                  "They show the comparison harness end to end, not what the published weights can do.")
    comparison_table(sec, rows, "comparators-table")


def _per_finding(sec: Section, results: Mapping[str, Any], figures: Mapping[str, Any]) -> None:
    items = results.get("per_finding_f1") or []
    if not items:
        no_data(sec, "per-finding F1 (needs both the classification probes and report generation)")
        return
    sec.paragraph(
        "F1 at threshold 0.5 of the per-finding Q-Former probes against F1 of the findings extracted "
        "(rule-based, with negation handling) from the generated reports, on the same test scans; "
        "both on the pretrained backbone. 95% CIs from a percentile bootstrap."
    )
    if figures.get("per_finding_f1"):
        sec.figure(figures["per_finding_f1"], caption="Per-finding F1 with 95% CIs: probes vs generated reports.")
    sec.table(
        ["finding", "probe F1", "report F1", "positives in test"],
        [[i["finding"], Cell(fmt_ci(as_ci(i.get("probe"))), "num"),
          Cell(fmt_ci(as_ci(i.get("report"))), "num"), Cell(str(i.get("support", "")), "num")]
         for i in items],
        table_id="per-finding-table",
    )


def _report_examples(sec: Section, results: Mapping[str, Any]) -> None:
    rg = results.get("report_generation") or {}
    examples = (results.get("examples") or {}).get("reports") or []
    if not examples:
        no_data(sec, "report generation")
        return
    field = rg.get("text_field", "report")
    what = ("impression (the abnormal findings only, like the paper's restructured reports)"
            if field == "impression" else f"{field} text")
    sec.paragraph(
        f"Text generated from frozen features of the pretrained backbone by the language model {rg.get('lm', '?')} "
        f"({'projector, then the whole LM' if rg.get('lm_note') else 'projector, then LoRA'}), trained to write the "
        f"{what}, beside the reference for the same scan."
    )
    for note in filter(None, [rg.get("lm_note"), *(rg.get("reading_notes") or [])]):
        sec.callout(str(note), kind="note")
    if metrics := rg.get("metrics") or {}:  # counts (an int value) as counts, not 6.000
        sec.table(["metric", "value"], [[k, Cell(str(v["value"]) if isinstance(v.get("value"), int) else fmt_ci(as_ci(v)),
                                              "num")] for k, v in metrics.items()])
    for ex in examples:
        sec.heading(f"Scan {ex.get('scan_id', '?')}")
        generated = str(ex.get("generated", "")).strip() or "(empty: the model ended the report at once)"
        sec.compare([("Reference", str(ex.get("reference", ""))), ("Generated", generated)])


def _qformer_text(results: Mapping[str, Any]) -> str:
    """The demo's Q-Former as configured (results.json ``config.probes``)."""
    probes = ((results.get("config") or {}).get("probes") or {})
    n = probes.get("qformer_queries")
    if not isinstance(n, int):
        return "a single-layer Q-Former cross-attending to all patch tokens"
    text = f"a single-layer Q-Former ({n} learned quer{'y' if n == 1 else 'ies'} cross-attending to all patch tokens"
    text += ", outputs averaged" if n > 1 else ""
    return text + (", plus a linear path from the CLS token)" if probes.get("qformer_skip") == "cls" else ")")


def compose_report(
    results: Mapping[str, Any], figures: Mapping[str, Any], *, title: str = "voxelfm demo report",
) -> HtmlReport:
    """Build the report. ``figures`` maps names to PNG bytes (or lists of (PNG, caption) pairs).

    Figure names: ``bars``, ``data_fraction``, ``heads``, ``inference_modes``, ``per_finding_f1``,
    ``retrieval`` (list), ``segmentation`` (list), ``pca`` (list).
    """
    rows = parse_rows(results.get("tasks", []))
    report = HtmlReport(
        title,
        subtitle=f"size {results.get('size', '?')} · device {results.get('device', '?')} · "
        f"voxelfm {results.get('voxelfm_version', '?')} · {results.get('created', '')}",
    )
    secs = {sid: report.section(sid, title) for sid, title in SECTIONS}

    _about(secs["about"], results, rows)
    secs["results-table"].paragraph(
        "One row per task category and metric, as in the paper's Fig. 2: the value on the held-out "
        "test scans with its 95% confidence interval for each frozen backbone. ↑ = higher is better.")
    results_table(secs["results-table"], rows, {b: BACKBONE_LABELS[b] for b in BACKBONE_NAMES}, categories=CATEGORIES)
    _paired(secs["paired-difference"], rows)
    figure_or_note(secs["bars"], figures.get("bars"),
                    "Each task's headline metric per backbone; whiskers are 95% CIs.", "bar chart")

    frac = results.get("data_fraction") or {}
    sec = secs["data-fraction"]
    if frac.get("points"):
        sec.paragraph(
            f"{frac.get('task', 'The probe')} trained on nested subsets of the training split "
            f"(same validation and test scans); metric {frac.get('metric', '?')}, mean over "
            f"{frac.get('seeds', '?')} subset seed(s), whiskers = 95% CIs of the test metric."
        )
    figure_or_note(sec, figures.get("data_fraction"), "Test metric against the fraction of training labels used.",
                    "data-fraction sweep")

    _comparison_section(secs["heads"], results, figures, "heads",
                        "The same classification task with two probe heads on each frozen backbone: a "
                        f"two-layer MLP on the CLS token, and {_qformer_text(results)}.",
                        "MLP on CLS vs Q-Former on patch tokens (95% CIs).", "MLP vs Q-Former comparison", "heads-table")
    _comparison_section(secs["inference-modes"], results, figures, "inference_modes",
                        "Features of the pretrained backbone from one forward pass over the whole volume "
                        "(3D) against chunked inference over overlapping axial slabs whose CLS tokens are "
                        "aggregated and patch grids stitched (2.5D); same probe, same test scans.",
                        "Full 3D vs chunked 2.5D (95% CIs).", "3D vs 2.5D comparison", "modes-table")

    _comparators(secs["comparators"], results)
    _per_finding(secs["per-finding-f1"], results, figures)
    _report_examples(secs["report-examples"], results)

    for sid, key, what in GALLERIES:
        gallery(secs[sid], figures.get(key), GALLERY_TEXT[key], what)

    _run_details(secs["run-details"], results)
    return report


def _run_details(sec: Section, results: Mapping[str, Any]) -> None:
    if results.get("timings"):
        timings_table(sec, results["timings"], results.get("cpu_seconds"), table_id="timings-table",
                      caption="Wall and CPU time (this process and its children) of the run that produced each "
                              "stage's outputs. Results do not depend on them: every stage is budgeted in steps.")
    backbones = results.get("backbones") or {}
    if backbones:
        rows = []
        for name, info in backbones.items():
            rows.append([BACKBONE_LABELS.get(name, name), str(info.get("model_id", "")),
                         str(info.get("preset", "")), str(info.get("description", ""))])
        sec.table(["backbone", "model id", "architecture", "how it was made"], rows)
    notes = results.get("notes") or []
    if notes:
        sec.heading("Notes")
        sec.bullets([str(n) for n in notes])
    sec.paragraph("All numbers are also in results.json next to this file.", muted=True)
