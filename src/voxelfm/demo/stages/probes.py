"""Stage 4: probes of six task categories on both frozen backbones and the HU-histogram baseline
(report generation is stage 5).

Configuration plus library calls: the demo's tasks (:func:`plan_jobs`) become one
:class:`voxelfm.probes.jobs.ProbeJob` per feature source, run by :func:`voxelfm.probes.jobs.run_jobs`
(as ``voxelfm evaluate`` runs a suite) into ``OUT/probes/<job>/<backbone>-<mode>/``, plus the
data-fraction sweep of the shared Q-Former (paper Fig. 4) on each 3D source. Comparisons (pretrained
− random, pretrained − baseline, Q-Former − MLP, 3D − 2.5D) are
:func:`voxelfm.probes.compare.paired_differences_many`. Everything the render stage needs is
summarised in ``OUT/probes/summary.json``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voxelfm.core.atomic import atomic_write_text
from voxelfm.core.stages import CheckResult, Stage, json_default
from voxelfm.demo import layout
from voxelfm.demo.config import DemoContext
from voxelfm.demo.results import CATEGORIES, VERSUS_BASELINE, VERSUS_RANDOM
from voxelfm.viz.result_rows import ResultRow, as_ci

if TYPE_CHECKING:
    import pandas as pd

    from voxelfm.metrics import DifferenceCI, MetricCI
    from voxelfm.probes.jobs import ProbeJob
    from voxelfm.probes.run import ProbeResult

PROBE_CATEGORIES = tuple(c for c in CATEGORIES if c != "report generation")

#: Row labels and units of the phantom's continuous targets.
TARGETS = {"age": ("age", "years"), "lung_volume_l": ("lung volume", "litres"),
           "heart_volume_ml": ("heart volume", "millilitres"), "largest_nodule_mm": ("largest nodule diameter", "mm"),
           "calcium_score": ("calcium burden score", "score points")}

Source = tuple[str, str]  # (backbone, mode)
THREE_D: tuple[Source, ...] = tuple((b, "3d") for b in layout.BACKBONE_NAMES)
SOURCES: tuple[Source, ...] = (*THREE_D, ("pretrained", "2.5d"))

#: Relative CPU cost of a job's probe on one source (measured on the ``small`` demo), so that the
#: longest jobs start first and the two workers finish close together. Order only: not results.
JOB_COST = {"classification-qformer": 10.0, "fractions": 6.0, "segmentation": 6.0, "localisation": 5.0,
            "survival": 3.0, "classification-mlp": 2.0, "regression": 1.0, "retrieval": 0.1}


@dataclass(frozen=True)
class Job:
    """One of the demo's probe configurations (``options``: a run_probe config with its head), run
    on several feature sources; ``sweep``: its data-fraction sweep instead."""

    name: str
    task: str
    targets: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)
    sources: tuple[Source, ...] = THREE_D
    sweep: bool = False


@dataclass(frozen=True)
class Headline:
    """A results-table row read from a job's metrics."""

    job: str
    category: str
    task: str
    metric_key: str
    metric: str
    higher_is_better: bool


def plan_jobs(ctx: DemoContext, labels: pd.DataFrame) -> tuple[list[Job], list[Headline], dict[str, list[str]]]:
    """The probe runs of the demo and the headline rows read from them."""
    from voxelfm.data.phantom import FINDINGS, REGRESSION_TARGETS, SEGMENTATION_LABELS
    from voxelfm.probes.data import usable_binary, usable_continuous

    cfg = ctx.config.probes
    findings = usable_binary(labels, list(FINDINGS))
    regression = usable_continuous(labels, list(REGRESSION_TARGETS))
    common = {"bootstrap": cfg.bootstrap, "bootstrap_seed": cfg.seed}
    train = {"epochs": cfg.epochs} if cfg.epochs is not None else {}
    head_params = {"hidden_dim": cfg.hidden_dim}
    cls_opts = {**cfg.classification_options(), "head": "mlp"}
    q_opts = {**cls_opts, "head": "qformer", "head_params": cfg.qformer_head_params()}
    jobs = [
        # The Q-Former costs ~10x the MLP per probe on CPU: on 3D features only (3D vs 2.5D uses the MLP).
        Job("classification-qformer", "classification", tuple(findings), q_opts),
        Job("classification-mlp", "classification", tuple(findings), cls_opts, SOURCES),
        Job("regression", "regression", tuple(regression),
            {**common, "head": "mlp", "head_params": head_params,
             "train": {"epochs": cfg.regression_epochs, "seed": cfg.seed}}),
        Job("survival", "survival", (), {**common, "head": "mlp", "head_params": head_params, "horizons": [2.0, 5.0],
                                         "train": {**train, "seed": cfg.seed}}),
        Job("retrieval", "retrieval", tuple(findings), common),
        Job("localisation", "localisation", (),
            {**common, "train": {**train, **({"epochs": cfg.loc_epochs} if cfg.loc_epochs else {}), "seed": cfg.seed}}),
        Job("segmentation", "segmentation", (),
            {**common, "label_root": str(layout.cohort_dir(ctx.out)), "target_downsample": cfg.seg_downsample,
             "num_classes": len(SEGMENTATION_LABELS) + 1, "class_names": list(SEGMENTATION_LABELS.values()),
             "head_params": {"hidden_dim": cfg.seg_hidden_dim, "num_steps": 2},
             "train": {"epochs": cfg.seg_epochs, "batch_size": cfg.seg_batch_size, "seed": cfg.seed}}),
        # The data-fraction sweep (paper Fig. 4): one Q-Former shared by every finding.
        Job("fractions", "classification", tuple(findings), {**q_opts, "multilabel": "shared"}, sweep=True),
    ]
    structures = f"{len(SEGMENTATION_LABELS)} structures"
    headlines = [
        Headline("classification-qformer", "classification", f"{len(findings)} findings, Q-Former on patches",
                 "macro/auroc", "macro AUROC", True),
        # MAE in training-SD units, as the paper (comparable across targets); the MAE in the
        # target's own unit goes into the row's detail.
        *[Headline("regression", "regression", TARGETS.get(t, (t.replace("_", " "), ""))[0], f"{t}/mae_sd",
                   "MAE (SD units)", False) for t in regression],
        Headline("survival", "survival", "overall survival (Cox)", "c_index_harrell", "Harrell's C-index", True),
        Headline("survival", "survival", "death within 5 years", "td_auroc@5", "time-dependent AUROC", True),
        Headline("retrieval", "retrieval", "same findings (1 match vs 99 random)", "macro/recall@10",
                 "macro Recall@10", True),
        Headline("retrieval", "retrieval", "same patient, other scan", "same_patient/recall@1", "Recall@1", True),
        Headline("localisation", "localisation", "largest nodule centre", "mean_error_mm", "mean error (mm)", False),
        Headline("segmentation", "segmentation", structures, "dice_macro", "macro Dice", True),
        Headline("segmentation", "segmentation", structures, "dice_micro", "micro Dice", True),
    ]
    return jobs, headlines, {"findings": findings, "regression": regression}


def source_name(source: Source) -> str:
    return f"{source[0]}-{source[1]}"


def probe_jobs(ctx: DemoContext, jobs: list[Job]) -> list[tuple[str, Source, ProbeJob]]:
    """Each job on its sources and on the comparator backbones' 3D features (``--backbones``), and
    the fraction sweep on each 3D source, as library probe jobs."""
    from voxelfm.probes.jobs import ProbeJob

    cfg = ctx.config.probes
    extra = tuple((name, "3d") for name in layout.comparator_names(ctx.config))
    labels = str(layout.cohort_dir(ctx.out) / "labels.csv")
    planned = []
    for job in jobs:
        sweep = job.sweep
        for source in job.sources if sweep else (*job.sources, *extra):
            name = source_name(source)
            planned.append((job.name, source, ProbeJob(
                job.task, str(layout.store_dir(ctx.out, *source)), labels,
                f"{'data fractions' if sweep else job.name} · {name}", store_name=name, targets=job.targets,
                config=job.options, out_dir=None if sweep else str(layout.probes_dir(ctx.out) / job.name / name),
                # seed index 0 trains with the probes' seed
                fractions=tuple(cfg.fractions) if sweep else (),
                fraction_seeds=tuple(cfg.seed + i for i in range(cfg.fraction_seeds)),
                figures=False, cost=JOB_COST.get(job.name, 1.0))))
    return planned


class ProbesStage(Stage):
    name = "probes"
    title = "Probes on both backbones (six task categories, sweeps, comparisons)"
    inputs = ("cohort", "embed")
    config_parts = ("probes", "n_examples")

    def outputs(self, ctx: DemoContext) -> list[Path]:
        return [layout.probes_dir(ctx.out)]  # run directories and summary.json

    def run(self, ctx: DemoContext) -> dict[str, Any]:
        import pandas as pd

        from voxelfm.core.progress import progress_bar
        from voxelfm.probes.data import forget_features
        from voxelfm.probes.jobs import run_jobs

        labels = pd.read_csv(layout.cohort_dir(ctx.out) / "labels.csv")
        jobs, headlines, used = plan_jobs(ctx, labels)
        planned = probe_jobs(ctx, jobs)
        with progress_bar(ctx.console) as progress:
            bar = progress.add_task("probes", total=len(planned))

            def done(i: int, outcome: tuple[str, Any]) -> None:
                if outcome[0] == "failed":
                    ctx.console.print(f"[yellow]skipped {planned[i][2].label}: {outcome[1]}[/]")
                progress.update(bar, description=planned[i][2].label, advance=1)

            outcomes = run_jobs([p[2] for p in planned], workers=ctx.config.workers, done=done)
        forget_features(keep=[layout.store_dir(ctx.out, *s) for s in THREE_D])  # report generation's
        results, sweep, failures = {}, [], []
        for (name, source, job), (status, value) in zip(planned, outcomes, strict=True):
            if status == "failed":
                failures.append(f"{job.label}: {value}")
            elif job.sweep:
                sweep += sweep_points(value, source[0], job.fraction_seeds)
            else:
                results[(name, source)] = value
        order = {b: i for i, b in enumerate(layout.BACKBONE_NAMES)}
        sweep.sort(key=lambda p: (p["seed"], p["fraction"], order.get(p["backbone"], len(order))))
        summary = summarise(ctx, Runs(results), headlines, sweep, used)
        summary["probe_seconds"] = {f"{job}/{source_name(src)}": round(res.seconds, 2)
                                    for (job, src), res in results.items()}
        summary["notes"] += [f"Probe not computed: {f}" for f in failures]
        atomic_write_text(layout.probes_summary(ctx.out), json.dumps(summary, indent=2, default=json_default))
        return {"runs": len(results) + len(sweep), "findings": len(used["findings"])}

    def check(self, ctx: DemoContext) -> CheckResult:
        res = CheckResult()
        path = layout.probes_summary(ctx.out)
        data = res.read_json(path)
        if data is None:
            return res
        rows = [ResultRow.from_dict(r) for r in data.get("tasks", [])]
        missing = [c for c in PROBE_CATEGORIES if c not in {r.category for r in rows}]
        res.require(not missing, f"{path}: no results for {missing}")
        for r in rows:
            res.require(all(b in r.values for b in layout.BACKBONE_NAMES), f"{path}: {r.task} lacks a backbone")
        res.require(bool(data.get("heads")), f"{path}: no MLP vs Q-Former comparison")
        res.require(bool(data.get("inference_modes")), f"{path}: no 3D vs 2.5D comparison")
        res.require(bool((data.get("data_fraction") or {}).get("points")), f"{path}: no data-fraction sweep")
        for ex in (data.get("examples") or {}).get("segmentation", []):
            mask = ctx.out / str(ex.get("prediction", ""))
            res.require(mask.is_file() and mask.stat().st_size > 0, f"{mask}: predicted mask missing")
        return res


def sweep_points(table: pd.DataFrame, backbone: str, seeds: tuple[int, ...]) -> list[dict[str, Any]]:
    """The sweep's macro AUROC per training fraction and seed (as its index in ``seeds``)."""
    return [{"fraction": float(r["fraction"]), "seed": seeds.index(int(r["seed"])), "backbone": backbone,
             "n_train": int(r["n_train"]), **as_ci(r).to_dict()}
            for r in table[table["metric"] == "macro/auroc"].to_dict(orient="records")]


@dataclass
class Runs:
    """The finished probe runs by (job, source) and the paired differences between pairs of them.

    Until :meth:`compare`, :meth:`difference` notes each pair it is asked for (and answers None):
    building the rows once tells which pairs they compare, so the pairs are written in one place.
    """

    results: dict[tuple[str, Source], ProbeResult]
    diffs: dict[tuple[int, int], dict[str, DifferenceCI]] | None = None
    asked: dict[tuple[int, int], tuple[ProbeResult, ProbeResult]] = field(default_factory=dict)

    def get(self, job: str, backbone: str, mode: str = "3d") -> ProbeResult | None:
        return self.results.get((job, (backbone, mode)))

    def value(self, job: str, backbone: str, key: str, mode: str = "3d") -> MetricCI:
        res = self.get(job, backbone, mode)
        return as_ci(None if res is None else res.metrics.get(key))  # missing: NaN

    def compare(self, *, n_resamples: int, seed: int, workers: int) -> None:
        """The paired bootstraps ``a − b`` of every pair asked for, on ``workers`` processes (one per
        pair of runs gives every metric of both); ``{}`` for a pair that cannot be compared."""
        from voxelfm.probes.compare import paired_differences_many

        computed = paired_differences_many(list(self.asked.values()), n_resamples=n_resamples, seed=seed,
                                           workers=workers)
        self.diffs = {key: {} if isinstance(d, str) else d for key, d in zip(self.asked, computed, strict=True)}

    def difference(self, a: ProbeResult | None, b: ProbeResult | None, key: str) -> DifferenceCI | None:
        """``a − b`` for one metric (paired over the same test units); None when undefined."""
        if a is None or b is None:
            return None
        if self.diffs is None:
            self.asked[(id(a), id(b))] = (a, b)
            return None
        return self.diffs.get((id(a), id(b)), {}).get(key)

    def row(self, category: str, task: str, metric: str, higher: bool, values: dict[str, MetricCI],
            pair: tuple[ProbeResult | None, ProbeResult | None], key: str, label: str = VERSUS_RANDOM,
            more: dict[str, DifferenceCI | None] | None = None, detail: str = "") -> dict[str, Any]:
        diffs = {label: self.difference(*pair, key), **(more or {})}
        return ResultRow(category, task, metric, higher, values, {k: d for k, d in diffs.items() if d is not None},
                         detail).to_dict()


def summarise(ctx: DemoContext, runs: Runs, headlines: list[Headline], sweep: list[dict[str, Any]],
              used: dict[str, list[str]]) -> dict[str, Any]:
    """Results-table rows, comparisons, per-finding F1 and examples from the finished probe runs."""
    from voxelfm.probes.retrieval import neighbour_examples
    from voxelfm.probes.tasks.segmentation import mask_examples

    cfg, n, n_findings = ctx.config.probes, ctx.config.n_examples, len(used["findings"])

    def rows() -> tuple[list[dict[str, Any]], tuple[list[dict[str, Any]], list[dict[str, Any]]], list[dict[str, Any]]]:
        return task_rows(runs, headlines), classifier_rows(runs, n_findings), comparator_rows(ctx, runs, headlines)

    rows()  # a first pass notes the pairs the rows compare, then their bootstraps run on the workers at once
    runs.compare(n_resamples=cfg.bootstrap, seed=cfg.seed, workers=ctx.config.workers)
    tasks, (heads, modes), comparators = rows()
    labels = layout.cohort_dir(ctx.out) / "labels.csv"
    retrieval, segmentation = runs.get("retrieval", "pretrained"), runs.get("segmentation", "pretrained")
    return {
        "tasks": tasks,
        "heads": heads,
        "inference_modes": modes,
        "comparators": comparators,
        "data_fraction": {"task": f"Q-Former (one shared head) on {n_findings} findings",
                          "metric": "macro AUROC", "seeds": cfg.fraction_seeds, "points": sweep},
        "per_finding_f1": per_finding_f1(runs, labels, used["findings"]),
        "examples": {
            "retrieval": [{**e, "backbone": "pretrained"} for e in
                          neighbour_examples(retrieval.predictions, labels, used["findings"], n=n)] if retrieval else [],
            "segmentation": [{**e, "backbone": "pretrained", "prediction": str(e["prediction"].relative_to(ctx.out))}
                             for e in mask_examples(segmentation, n=n)] if segmentation else [],
        },
        "used_targets": used,
        "notes": [
            f"Classification probes cover the {n_findings} findings with both classes in every split.",
            "Pretraining saw only the training-split scans (no labels); probes were trained on the training "
            "split, selected on validation and evaluated once on the test split.",
        ],
    }


def task_rows(runs: Runs, headlines: list[Headline]) -> list[dict[str, Any]]:
    """The results table: each headline metric on every feature source, with the paired differences
    pretrained − random and pretrained − histogram."""
    rows = []
    for h in headlines:
        pre, rnd, base = (runs.get(h.job, b) for b in layout.BACKBONE_NAMES)
        if pre is None or rnd is None:
            continue
        values = {b: runs.value(h.job, b, h.metric_key) for b in layout.BACKBONE_NAMES}
        if math.isnan(values["pretrained"].value) and math.isnan(values["random"].value):
            continue  # e.g. no event before a horizon in this small test set
        detail = ""
        if h.metric_key.endswith("/mae_sd"):
            unit_key = h.metric_key[: -len("_sd")]
            unit = TARGETS.get(unit_key.split("/")[0], ("", "target units"))[1]
            a, b = runs.value(h.job, "pretrained", unit_key), runs.value(h.job, "random", unit_key)
            if math.isfinite(a.value) and math.isfinite(b.value):
                detail = f"MAE in {unit}: {a.value:.3g} (pretrained) vs {b.value:.3g} (random)"
        rows.append(runs.row(h.category, h.task, h.metric, h.higher_is_better, values, (pre, rnd), h.metric_key,
                             detail=detail, more={VERSUS_BASELINE: runs.difference(pre, base, h.metric_key)}))
    return rows


def classifier_rows(runs: Runs, n_findings: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Macro AUROC of MLP on CLS vs Q-Former on patches (paper Fig. 5 left) and of 3D vs chunked 2.5D
    features (Fig. 5 right), each with its paired difference."""
    key, label, get = "macro/auroc", "macro AUROC", runs.get
    head_jobs = (("classification-mlp", "MLP on CLS"), ("classification-qformer", "Q-Former on patches"))
    values = {f"{b} · {head}": runs.value(job, b, key)
              for b in layout.BACKBONE_NAMES for job, head in head_jobs if get(job, b) is not None}
    heads = [runs.row("classification", f"{n_findings} findings", label, True, values,
                      (get("classification-qformer", "pretrained"), get("classification-mlp", "pretrained")), key,
                      label="pretrained Q-Former − pretrained MLP",
                      detail="difference: pretrained Q-Former − pretrained MLP")] if values else []
    modes = [runs.row("classification", f"{n_findings} findings, {head}", label, True,
                      {"pretrained · 3D": runs.value(job, "pretrained", key),
                       "pretrained · 2.5D": runs.value(job, "pretrained", key, "2.5d")},
                      (get(job, "pretrained"), get(job, "pretrained", "2.5d")), key, label="3D − 2.5D",
                      detail="difference: 3D − 2.5D")
             for job, head in head_jobs[::-1] if get(job, "pretrained") and get(job, "pretrained", "2.5d")]
    return heads, modes


def per_finding_f1(runs: Runs, labels: Path, findings: list[str]) -> dict[str, Any]:
    """F1 at 0.5 of each finding (the pretrained Q-Former) and its number of positive test scans."""
    import pandas as pd

    result, out = runs.get("classification-qformer", "pretrained"), {}
    table = pd.read_csv(labels)
    for finding in findings if result is not None else []:
        if f"{finding}/f1@0.5" in result.metrics:
            support = int(table.loc[table["split"] == "test", finding].sum())
            out[finding] = {**as_ci(result.metrics[f"{finding}/f1@0.5"]).to_dict(), "support": support}
    return out


def comparator_rows(ctx: DemoContext, runs: Runs, headlines: list[Headline]) -> list[dict[str, Any]]:
    """Each comparator backbone beside the reference (pretrained) on every headline metric, with the
    paired difference comparator − pretrained (as ``voxelfm evaluate`` with ``reference: pretrained``)."""
    rows = []
    for name in layout.comparator_names(ctx.config):
        for h in headlines:
            other, reference = runs.get(h.job, name), runs.get(h.job, "pretrained")
            if other is None or reference is None:
                continue
            values = {"pretrained": runs.value(h.job, "pretrained", h.metric_key),
                      name: runs.value(h.job, name, h.metric_key)}
            rows.append(runs.row(h.category, h.task, h.metric, h.higher_is_better, values, (other, reference),
                                 h.metric_key, label=f"{name} − pretrained", detail=f"difference: {name} − pretrained"))
    return rows
