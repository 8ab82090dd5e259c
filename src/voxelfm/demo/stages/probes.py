"""Stage 4: probes of six task categories on both frozen backbones and the HU-histogram baseline
(report generation is stage 5).

Configuration plus library calls: the demo's tasks (:func:`plan_jobs`) become one
:class:`voxelfm.probes.jobs.ProbeJob` per feature source, run by :func:`voxelfm.probes.jobs.run_jobs`
(as ``voxelfm evaluate`` runs a suite) into ``OUT/probes/<job>/<backbone>-<mode>/``, plus the
data-fraction sweep of the shared Q-Former (paper Fig. 4) on each 3D source. Each table row is a
:class:`voxelfm.viz.result_rows.RowPlan` naming the runs it shows and the pairs it compares
(pretrained − random, pretrained − baseline, Q-Former − MLP, 3D − 2.5D), bootstrapped by
:func:`voxelfm.probes.compare.differences_between`. Everything the render stage needs is summarised
in ``OUT/probes/summary.json``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voxelfm.core.atomic import atomic_write_text
from voxelfm.core.stages import CheckResult, Stage, json_default
from voxelfm.demo import layout
from voxelfm.demo.config import DemoContext
from voxelfm.demo.results import CATEGORIES, VERSUS_BASELINE, VERSUS_RANDOM, row_problems
from voxelfm.viz.result_rows import RowPlan, as_ci

if TYPE_CHECKING:
    import pandas as pd

    from voxelfm.metrics import MetricCI
    from voxelfm.probes.jobs import ProbeJob
    from voxelfm.probes.run import ProbeResult

PROBE_CATEGORIES = tuple(c for c in CATEGORIES if c != "report generation")

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


#: A results-table row read from one job's runs: ``(job, RowPlan without its runs)``.
Headline = tuple[str, RowPlan]
#: One library probe job and what it is in the demo: ``(job name, source, ProbeJob)``.
Planned = tuple[str, Source, "ProbeJob"]


def plan_jobs(ctx: DemoContext, labels: pd.DataFrame) -> tuple[list[Planned], list[Headline], dict[str, list[str]]]:
    """The probe runs of the demo as library jobs: each :class:`Job` on its sources and on the
    comparator backbones' 3D features (``--backbones``), the fraction sweep on each 3D source; and
    the headline rows read from them."""
    from voxelfm.data.phantom import FINDINGS, REGRESSION_TARGETS, SEGMENTATION_LABELS, TARGET_NAMES
    from voxelfm.probes.data import usable_binary, usable_continuous
    from voxelfm.probes.jobs import ProbeJob

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
        ("classification-qformer", RowPlan("classification", f"{len(findings)} findings, Q-Former on patches",
                                           "macro AUROC", "macro/auroc")),
        # MAE in training-SD units, as the paper (comparable across targets); the MAE in the
        # target's own unit goes into the row's detail.
        *[("regression", RowPlan("regression", TARGET_NAMES.get(t, (t.replace("_", " "), ""))[0], "MAE (SD units)",
                                 f"{t}/mae_sd", False)) for t in regression],
        ("survival", RowPlan("survival", "overall survival (Cox)", "Harrell's C-index", "c_index_harrell")),
        ("survival", RowPlan("survival", "death within 5 years", "time-dependent AUROC", "td_auroc@5")),
        ("retrieval", RowPlan("retrieval", "same findings (1 match vs 99 random)", "macro Recall@10", "macro/recall@10")),
        ("retrieval", RowPlan("retrieval", "same patient, other scan", "Recall@1", "same_patient/recall@1")),
        ("localisation", RowPlan("localisation", "largest nodule centre", "mean error (mm)", "mean_error_mm", False)),
        ("segmentation", RowPlan("segmentation", structures, "macro Dice", "dice_macro")),
        ("segmentation", RowPlan("segmentation", structures, "micro Dice", "dice_micro")),
    ]
    extra = tuple((name, "3d") for name in layout.comparator_names(ctx.config))
    planned = [(job.name, source, ProbeJob(
        job.task, str(layout.store_dir(ctx.out, *source)), str(layout.cohort_dir(ctx.out) / "labels.csv"),
        f"{'data fractions' if job.sweep else job.name} · {source_name(source)}", store_name=source_name(source),
        targets=job.targets, config=job.options,
        out_dir=None if job.sweep else str(layout.probes_dir(ctx.out) / job.name / source_name(source)),
        fractions=tuple(cfg.fractions) if job.sweep else (),
        fraction_seeds=tuple(cfg.seed + i for i in range(cfg.fraction_seeds)),  # index 0: the probes' seed
        figures=False, cost=JOB_COST.get(job.name, 1.0)))
        for job in jobs for source in (job.sources if job.sweep else (*job.sources, *extra))]
    return planned, headlines, {"findings": findings, "regression": regression}


def source_name(source: Source) -> str:
    return f"{source[0]}-{source[1]}"


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
        planned, headlines, used = plan_jobs(ctx, labels)
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
        summary = summarise(ctx, results, headlines, sweep, used)
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
        res.problems += [f"{path}: {p}" for p in row_problems(data.get("tasks", []), PROBE_CATEGORIES)]
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


Key = tuple[str, Source]  # (job, source): one finished probe run


def run_key(job: str, backbone: str = "pretrained", mode: str = "3d") -> Key:
    return job, (backbone, mode)


def summarise(ctx: DemoContext, results: dict[Key, ProbeResult], headlines: list[Headline],
              sweep: list[dict[str, Any]], used: dict[str, list[str]]) -> dict[str, Any]:
    """Results-table rows, comparisons, per-finding F1 and examples from the finished probe runs."""
    from voxelfm.probes.compare import differences_between
    from voxelfm.probes.retrieval import neighbour_examples
    from voxelfm.probes.tasks.segmentation import mask_examples

    cfg, n, n_findings = ctx.config.probes, ctx.config.n_examples, len(used["findings"])
    metrics = {k: res.metrics for k, res in results.items()}
    plans = {"tasks": task_rows(metrics, headlines), **classifier_rows(metrics, n_findings),
             "comparators": comparator_rows(ctx, metrics, headlines)}
    diffs = differences_between(results, [p for rows in plans.values() for r in rows for p in r.pairs.values()],
                                n_resamples=cfg.bootstrap, seed=cfg.seed, workers=ctx.config.workers)
    labels = layout.cohort_dir(ctx.out) / "labels.csv"
    retrieval, segmentation = results.get(run_key("retrieval")), results.get(run_key("segmentation"))
    return {
        **{name: [r.row(metrics, diffs).to_dict() for r in rows] for name, rows in plans.items()},
        "data_fraction": {"task": f"Q-Former (one shared head) on {n_findings} findings",
                          "metric": "macro AUROC", "seeds": cfg.fraction_seeds, "points": sweep},
        "per_finding_f1": per_finding_f1(results.get(run_key("classification-qformer")), labels, used["findings"]),
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


def task_rows(metrics: dict[Key, dict[str, MetricCI]], headlines: list[Headline]) -> list[RowPlan]:
    """The results table: each headline metric on every feature source, with the paired differences
    pretrained − random and pretrained − histogram."""
    from voxelfm.data.phantom import TARGET_NAMES

    rows = []
    for job, h in headlines:
        keys = {b: run_key(job, b) for b in layout.BACKBONE_NAMES}
        pre, rnd = (metrics.get(keys[b]) for b in ("pretrained", "random"))
        if pre is None or rnd is None:
            continue
        if math.isnan(as_ci(pre.get(h.key)).value) and math.isnan(as_ci(rnd.get(h.key)).value):
            continue  # e.g. no event before a horizon in this small test set
        detail = ""
        if h.key.endswith("/mae_sd"):
            unit_key = h.key[: -len("_sd")]
            unit = TARGET_NAMES.get(unit_key.split("/")[0], ("", "target units"))[1]
            a, b = as_ci(pre.get(unit_key)), as_ci(rnd.get(unit_key))
            if math.isfinite(a.value) and math.isfinite(b.value):
                detail = f"MAE in {unit}: {a.value:.3g} (pretrained) vs {b.value:.3g} (random)"
        rows.append(replace(h, values=keys, detail=detail, pairs={
            VERSUS_RANDOM: (keys["pretrained"], keys["random"]), VERSUS_BASELINE: (keys["pretrained"], keys[layout.BASELINE])}))
    return rows


def classifier_rows(metrics: dict[Key, dict[str, MetricCI]], n_findings: int) -> dict[str, list[RowPlan]]:
    """Macro AUROC of MLP on CLS vs Q-Former on patches (``heads``, paper Fig. 5 left) and of 3D vs
    chunked 2.5D features (``inference_modes``, Fig. 5 right), each with its paired difference."""
    key, label = "macro/auroc", "macro AUROC"
    mlp, qformer = "classification-mlp", "classification-qformer"
    head_jobs = ((mlp, "MLP on CLS"), (qformer, "Q-Former on patches"))
    values = {f"{b} · {head}": run_key(job, b)
              for b in layout.BACKBONE_NAMES for job, head in head_jobs if run_key(job, b) in metrics}
    difference = "pretrained Q-Former − pretrained MLP"
    heads = [RowPlan("classification", f"{n_findings} findings", label, key, True, values,
                     {difference: (run_key(qformer), run_key(mlp))}, f"difference: {difference}")] if values else []
    modes = [RowPlan("classification", f"{n_findings} findings, {head}", label, key, True,
                     {"pretrained · 3D": run_key(job), "pretrained · 2.5D": run_key(job, mode="2.5d")},
                     {"3D − 2.5D": (run_key(job), run_key(job, mode="2.5d"))}, "difference: 3D − 2.5D")
             for job, head in head_jobs[::-1] if run_key(job) in metrics and run_key(job, mode="2.5d") in metrics]
    return {"heads": heads, "inference_modes": modes}


def per_finding_f1(result: ProbeResult | None, labels: Path, findings: list[str]) -> dict[str, Any]:
    """F1 at 0.5 of each finding (the pretrained Q-Former) and its number of positive test scans."""
    import pandas as pd

    out = {}
    table = pd.read_csv(labels)
    for finding in findings if result is not None else []:
        if f"{finding}/f1@0.5" in result.metrics:
            support = int(table.loc[table["split"] == "test", finding].sum())
            out[finding] = {**as_ci(result.metrics[f"{finding}/f1@0.5"]).to_dict(), "support": support}
    return out


def comparator_rows(ctx: DemoContext, metrics: dict[Key, dict[str, MetricCI]],
                    headlines: list[Headline]) -> list[RowPlan]:
    """Each comparator backbone beside the reference (pretrained) on every headline metric, with the
    paired difference comparator − pretrained (as ``voxelfm evaluate`` with ``reference: pretrained``)."""
    return [replace(h, values={"pretrained": run_key(job), name: run_key(job, name)},
                    pairs={f"{name} − pretrained": (run_key(job, name), run_key(job))},
                    detail=f"difference: {name} − pretrained")
            for name in layout.comparator_names(ctx.config) for job, h in headlines
            if run_key(job, name) in metrics and run_key(job) in metrics]
