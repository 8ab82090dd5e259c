"""Stage 4: probes of six task categories on both frozen backbones and the HU-histogram baseline
(report generation is stage 5).

Configuration plus library calls: every probe is one :func:`voxelfm.probes.run_probe` on a
backbone's features, written to ``OUT/probes/<job>/<backbone>-<mode>/``; comparisons (pretrained −
random, pretrained − baseline, Q-Former − MLP, 3D − 2.5D) are
:func:`voxelfm.probes.compare.paired_differences`; the data-fraction sweep (paper Fig. 4) is
:func:`voxelfm.probes.fractions.fraction_sweep`. Everything the render stage needs is summarised
in ``OUT/probes/summary.json``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from voxelfm.core.atomic import atomic_write_text
from voxelfm.core.stages import CheckResult, Stage, json_default
from voxelfm.demo import layout
from voxelfm.demo.config import DemoConfig, DemoContext
from voxelfm.demo.results import CATEGORIES, VERSUS_BASELINE, VERSUS_RANDOM
from voxelfm.viz.result_rows import ResultRow, as_ci

if TYPE_CHECKING:
    import pandas as pd
    from rich.progress import Progress, TaskID

    from voxelfm.metrics import DifferenceCI, MetricCI
    from voxelfm.probes.data import FeatureSet
    from voxelfm.probes.run import ProbeResult

PROBE_CATEGORIES = tuple(c for c in CATEGORIES if c != "report generation")

#: Row labels and units of the phantom's continuous targets.
TARGETS = {"age": ("age", "years"), "lung_volume_l": ("lung volume", "litres"),
           "heart_volume_ml": ("heart volume", "millilitres"), "largest_nodule_mm": ("largest nodule diameter", "mm"),
           "calcium_score": ("calcium burden score", "score points")}

Source = tuple[str, str]  # (backbone, mode)
THREE_D: tuple[Source, ...] = tuple((b, "3d") for b in layout.BACKBONE_NAMES)
SOURCES: tuple[Source, ...] = (*THREE_D, ("pretrained", "2.5d"))


@dataclass(frozen=True)
class Job:
    """One probe configuration, run on several feature sources."""

    name: str
    task: str
    targets: tuple[str, ...] = ()
    head: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    sources: tuple[Source, ...] = THREE_D


@dataclass(frozen=True)
class Headline:
    """A results-table row read from a job's metrics."""

    job: str
    category: str
    task: str
    metric_key: str
    metric: str
    higher_is_better: bool


_LOADED: dict[Path, tuple[Any, FeatureSet]] = {}


def feature_set(ctx: DemoContext, backbone: str, mode: str = "3d") -> FeatureSet:
    """A store's features (CLS, patch grids, geometries), read once per process while it is unchanged.

    The probes and report-generation stages share them instead of reading every store twice.
    """
    from voxelfm.probes.data import FeatureSet

    path = layout.store_dir(ctx.out, backbone, mode)
    stamp = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in path.glob("manifest*.jsonl"))
    if any(p.parent != ctx.out / "embeddings" for p in _LOADED):
        _LOADED.clear()  # another demo directory: do not hold its features
    if path not in _LOADED or _LOADED[path][0] != stamp:
        _LOADED[path] = (stamp, FeatureSet.from_store(path, patches=True, name=f"{backbone}-{mode}"))
    return _LOADED[path][1]


def forget_features(keep: tuple[Source, ...] = ()) -> None:
    """Release the shared features of every source but ``keep`` (the next stage's)."""
    for path in list(_LOADED):
        if not any(path == layout.store_dir(path.parent.parent, *source) for source in keep):
            del _LOADED[path]


def usable_binary(labels: pd.DataFrame, columns: list[str], min_per_class: int = 1) -> list[str]:
    """Columns with both classes (at least ``min_per_class`` each) in every split."""
    def ok(col: str) -> bool:
        for split in ("train", "val", "test"):
            values = labels.loc[labels["split"] == split, col].dropna().astype(int)
            if min(values.sum(), len(values) - values.sum()) < min_per_class:
                return False
        return True

    return [c for c in columns if c in labels.columns and ok(c)]


def usable_continuous(labels: pd.DataFrame, columns: list[str]) -> list[str]:
    """Numeric columns without gaps that vary in the training split."""
    import pandas as pd

    values = {c: pd.to_numeric(labels[c], errors="coerce") for c in columns if c in labels.columns}
    return [c for c, v in values.items() if v.notna().all() and v[labels["split"] == "train"].std() > 0]


def plan_jobs(ctx: DemoContext, labels: pd.DataFrame) -> tuple[list[Job], list[Headline], dict[str, list[str]]]:
    """The probe runs of the demo and the headline rows read from them."""
    from voxelfm.data.phantom import FINDINGS, REGRESSION_TARGETS, SEGMENTATION_LABELS

    cfg = ctx.config.probes
    findings = usable_binary(labels, list(FINDINGS))
    regression = usable_continuous(labels, list(REGRESSION_TARGETS))
    common = {"bootstrap": cfg.bootstrap, "bootstrap_seed": cfg.seed}
    train = {"epochs": cfg.epochs} if cfg.epochs is not None else {}
    head_params = {"hidden_dim": cfg.hidden_dim}
    cls_opts = cfg.classification_options()
    q_opts = {**cls_opts, "head_params": cfg.qformer_head_params()}
    jobs = [
        # The Q-Former costs ~10x the MLP per probe on CPU: on 3D features only (3D vs 2.5D uses the MLP).
        Job("classification-qformer", "classification", tuple(findings), "qformer", q_opts),
        Job("classification-mlp", "classification", tuple(findings), "mlp", cls_opts, SOURCES),
        Job("regression", "regression", tuple(regression), "mlp",
            {**common, "head_params": head_params, "train": {"epochs": cfg.regression_epochs, "seed": cfg.seed}}),
        Job("survival", "survival", (), "mlp",
            {**common, "head_params": head_params, "horizons": [2.0, 5.0], "train": {**train, "seed": cfg.seed}}),
        Job("retrieval", "retrieval", tuple(findings), None, common),
        Job("localisation", "localisation", (), None,
            {**common, "train": {**train, **({"epochs": cfg.loc_epochs} if cfg.loc_epochs else {}), "seed": cfg.seed}}),
        Job("segmentation", "segmentation", (), None,
            {**common, "label_root": str(layout.cohort_dir(ctx.out)), "target_downsample": cfg.seg_downsample,
             "num_classes": len(SEGMENTATION_LABELS) + 1, "class_names": list(SEGMENTATION_LABELS.values()),
             "head_params": {"hidden_dim": cfg.seg_hidden_dim, "num_steps": 2},
             "train": {"epochs": cfg.seg_epochs, "batch_size": cfg.seg_batch_size, "seed": cfg.seed}}),
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

        labels = pd.read_csv(layout.cohort_dir(ctx.out) / "labels.csv")
        jobs, headlines, used = plan_jobs(ctx, labels)
        failures: list[str] = []
        # comparator backbones (--backbones) run every job on their 3D features
        extra: tuple[Source, ...] = tuple((name, "3d") for name in layout.comparator_names(ctx.config))
        items = plan_items(ctx, jobs, extra, used["findings"])
        with progress_bar(ctx.console) as progress:
            bar = progress.add_task("probes", total=len(items))
            results, sweep = run_items_of(ctx, items, failures, progress, bar)
        forget_features(keep=THREE_D)  # report generation reads the 3D stores only
        summary = summarise(ctx, labels, headlines, results, sweep, used)
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


#: Relative CPU cost of a job's probe on one source (measured on the ``small`` demo), so that the
#: longest items start first and the two workers finish close together. Order only: not results.
ITEM_COST = {"classification-qformer": 10.0, "fractions": 6.0, "segmentation": 6.0, "localisation": 5.0,
             "survival": 3.0, "classification-mlp": 2.0, "regression": 1.0, "retrieval": 0.1}


@dataclass(frozen=True)
class ProbeItem:
    """One unit of the stage's work: a job on one feature source, or (``sweep``) the data-fraction
    sweep of the shared Q-Former on one source. Picklable: it goes to a worker process."""

    out: Path
    config: DemoConfig
    job: Job
    source: Source
    sweep: bool = False

    @property
    def label(self) -> str:
        return f"{'data fractions' if self.sweep else self.job.name} · {source_name(self.source)}"


def plan_items(ctx: DemoContext, jobs: list[Job], extra: tuple[Source, ...], findings: list[str]) -> list[ProbeItem]:
    """Every probe run of the stage (each job on its sources plus ``extra``) and the fraction sweep
    on each 3D source, the costliest first."""
    items = [ProbeItem(ctx.out, ctx.config, job, source) for job in jobs for source in (*job.sources, *extra)]
    sweep_job = Job("fractions", "classification", tuple(findings), "qformer",
                    {**jobs[0].options, "multilabel": "shared"})
    items += [ProbeItem(ctx.out, ctx.config, sweep_job, source, sweep=True) for source in THREE_D]
    return sorted(items, key=lambda it: -ITEM_COST.get(it.job.name, 1.0))  # stable: plan order among equals


_LABELS: dict[Path, pd.DataFrame] = {}


def run_item(item: ProbeItem) -> tuple[str, Any]:
    """One item, in this process: ``("ok", ProbeResult)`` for a probe, ``("ok", points)`` for a
    sweep, or ``("failed", message)`` when the cohort cannot support it."""
    import pandas as pd

    from voxelfm.core.errors import VoxelFMError
    from voxelfm.demo.config import DemoContext
    from voxelfm.probes.run import run_probe

    ctx = DemoContext(out=item.out, config=item.config)
    path = layout.cohort_dir(item.out) / "labels.csv"
    if path not in _LABELS:
        _LABELS.clear()
        _LABELS[path] = pd.read_csv(path)
    labels, job = _LABELS[path], item.job
    try:
        if item.sweep:
            return "ok", sweep_points(ctx, labels, item.source, job)
        return "ok", run_probe(job.task, feature_set(ctx, *item.source), labels, target=list(job.targets) or None,
                               head=job.head, out_dir=layout.probes_dir(item.out) / job.name / source_name(item.source),
                               config=job.options, figures=False)
    except VoxelFMError as exc:
        # Small cohorts can leave a task without enough test cases (e.g. no events in the test
        # split): say so in the report rather than abort every other task.
        return "failed", f"{item.label}: {exc}"


def run_items_of(ctx: DemoContext, items: list[ProbeItem], failures: list[str], progress: Progress,
                 bar: TaskID) -> tuple[dict[tuple[str, Source], ProbeResult], list[dict[str, Any]]]:
    """Run every item on ``ctx.config.workers`` processes (:mod:`voxelfm.core.parallel`); the probe
    results by (job, source) and the sweep's points in a fixed order, whatever the finishing order."""
    from voxelfm.core.parallel import run_items

    def done(i: int, outcome: tuple[str, Any]) -> None:
        if outcome[0] == "failed":
            ctx.console.print(f"[yellow]skipped {outcome[1]}[/]")
        progress.update(bar, description=items[i].label, advance=1)

    outcomes = run_items(run_item, items, workers=ctx.config.workers, done=done)
    results: dict[tuple[str, Source], ProbeResult] = {}
    points: list[dict[str, Any]] = []
    for item, (status, value) in zip(items, outcomes, strict=True):
        if status == "failed":
            failures.append(value)
        elif item.sweep:
            points += value
        else:
            results[(item.job.name, item.source)] = value
    order = {b: i for i, b in enumerate(layout.BACKBONE_NAMES)}
    return results, sorted(points, key=lambda p: (p["seed"], p["fraction"], order.get(p["backbone"], len(order))))


def sweep_points(ctx: DemoContext, labels: pd.DataFrame, source: Source, job: Job) -> list[dict[str, Any]]:
    """Macro AUROC of the shared Q-Former on nested, stratified training fractions of one source, per seed."""
    from voxelfm.probes.fractions import fraction_sweep

    cfg = ctx.config.probes
    seeds = [cfg.seed + i for i in range(cfg.fraction_seeds)]  # seed index 0 trains with the probes' seed
    table = fraction_sweep("classification", feature_set(ctx, *source), labels, fractions=cfg.fractions,
                           seeds=seeds, target=list(job.targets), head="qformer", config=job.options)
    return [{"fraction": float(r["fraction"]), "seed": seeds.index(int(r["seed"])), "backbone": source[0],
             "n_train": int(r["n_train"]), **as_ci(r).to_dict()}
            for r in table[table["metric"] == "macro/auroc"].to_dict(orient="records")]


def _estimate(res: ProbeResult | None, key: str) -> MetricCI:
    return as_ci(None if res is None else res.metrics.get(key))  # missing: NaN


def _difference(ctx: DemoContext, a: ProbeResult | None, b: ProbeResult | None,
                key: str) -> DifferenceCI | None:
    """``a − b`` for one metric (paired over the same test units); None when undefined."""
    from voxelfm.core.errors import VoxelFMError
    from voxelfm.probes.compare import paired_differences

    if a is None or b is None:
        return None
    # One paired bootstrap per pair of runs gives every metric of both (e.g. survival's C-index and
    # time-dependent AUROC rows, or Dice macro and micro): the same numbers as one bootstrap per
    # metric (same seed, same resamples), at a fraction of the cost.
    pair = (id(a), id(b))
    if pair not in _PAIRS:
        cfg = ctx.config.probes
        try:
            _PAIRS[pair] = paired_differences(a, b, n_resamples=cfg.bootstrap, seed=cfg.seed)
        except VoxelFMError:
            _PAIRS[pair] = {}
    return _PAIRS[pair].get(key)


#: Paired differences of the run pairs compared so far, by the runs' ids (cleared by summarise).
_PAIRS: dict[tuple[int, int], dict[str, DifferenceCI]] = {}


def compare_pairs(ctx: DemoContext, pairs: list[tuple[ProbeResult | None, ProbeResult | None]]) -> None:
    """The paired bootstraps of ``pairs`` on ``ctx.config.workers`` processes, into ``_PAIRS`` (each
    is ~2,000 evaluations of a task's metrics; the same numbers computed anywhere); ``{}`` for a
    pair that cannot be compared."""
    from voxelfm.probes.compare import paired_differences_many

    todo: dict[tuple[int, int], tuple[ProbeResult, ProbeResult]] = {}
    for a, b in pairs:
        if a is not None and b is not None and (id(a), id(b)) not in _PAIRS:
            todo[(id(a), id(b))] = (a, b)
    cfg = ctx.config.probes
    computed = paired_differences_many(list(todo.values()), n_resamples=cfg.bootstrap, seed=cfg.seed,
                                       workers=ctx.config.workers)
    for key, diffs in zip(todo, computed, strict=True):
        _PAIRS[key] = {} if isinstance(diffs, str) else diffs


def needed_pairs(ctx: DemoContext, headlines: list[Headline], get: Getter) -> list[tuple[Any, Any]]:
    """Every pair of runs the summary compares (task rows, heads, 3D vs 2.5D, comparators)."""
    pairs = []
    for h in headlines:
        pre = get(h.job, "pretrained")
        pairs += [(pre, get(h.job, "random")), (pre, get(h.job, layout.BASELINE))]
        pairs += [(get(h.job, name), pre) for name in layout.comparator_names(ctx.config)]
    pairs.append((get("classification-qformer", "pretrained"), get("classification-mlp", "pretrained")))
    pairs += [(get(job, "pretrained"), get(job, "pretrained", "2.5d"))
              for job in ("classification-mlp", "classification-qformer")]
    return pairs


def _row(ctx: DemoContext, category: str, task: str, metric: str, higher: bool, values: dict[str, MetricCI],
         pair: tuple[ProbeResult | None, ProbeResult | None], key: str, **extra: Any) -> dict[str, Any]:
    diffs = {extra.pop("label", VERSUS_RANDOM): _difference(ctx, *pair, key), **extra.pop("more", {})}
    return ResultRow(category, task, metric, higher, values, {k: d for k, d in diffs.items() if d is not None},
                     **extra).to_dict()


Getter = Callable[..., "ProbeResult | None"]  # (job, backbone, mode="3d") -> the finished run, if any


def summarise(ctx: DemoContext, labels: pd.DataFrame, headlines: list[Headline],
              results: dict[tuple[str, Source], ProbeResult], sweep: list[dict[str, Any]],
              used: dict[str, list[str]]) -> dict[str, Any]:
    """Results-table rows, comparisons, per-finding F1 and examples from the finished probe runs."""
    _PAIRS.clear()  # ids of another call's runs may be reused
    def get(job: str, backbone: str, mode: str = "3d") -> ProbeResult | None:
        return results.get((job, (backbone, mode)))

    compare_pairs(ctx, needed_pairs(ctx, headlines, get))  # in parallel; the rows below read them
    n_findings = len(used["findings"])
    heads, modes = classifier_rows(ctx, n_findings, get)
    retrieval, segmentation = get("retrieval", "pretrained"), get("segmentation", "pretrained")
    return {
        "tasks": task_rows(ctx, headlines, get),
        "heads": heads,
        "inference_modes": modes,
        "comparators": comparator_rows(ctx, headlines, get),
        "data_fraction": {"task": f"Q-Former (one shared head) on {n_findings} findings",
                          "metric": "macro AUROC", "seeds": ctx.config.probes.fraction_seeds, "points": sweep},
        "per_finding_f1": per_finding_f1(labels, get("classification-qformer", "pretrained"), used["findings"]),
        "examples": {
            "retrieval": retrieval_examples(ctx, labels, retrieval, used["findings"]) if retrieval else [],
            "segmentation": segmentation_examples(ctx, segmentation) if segmentation else [],
        },
        "used_targets": used,
        "notes": [
            f"Classification probes cover the {n_findings} findings with both classes in every split.",
            "Pretraining saw only the training-split scans (no labels); probes were trained on the training "
            "split, selected on validation and evaluated once on the test split.",
        ],
    }


def task_rows(ctx: DemoContext, headlines: list[Headline], get: Getter) -> list[dict[str, Any]]:
    """The results table: each headline metric on every feature source, with the paired differences
    pretrained − random and pretrained − histogram."""
    rows = []
    for h in headlines:
        pre, rnd, base = (get(h.job, b) for b in layout.BACKBONE_NAMES)
        if pre is None or rnd is None:
            continue
        values = {b: _estimate(get(h.job, b), h.metric_key) for b in layout.BACKBONE_NAMES}
        if math.isnan(values["pretrained"].value) and math.isnan(values["random"].value):
            continue  # e.g. no event before a horizon in this small test set
        detail = ""
        if h.metric_key.endswith("/mae_sd"):
            unit_key = h.metric_key[: -len("_sd")]
            unit = TARGETS.get(unit_key.split("/")[0], ("", "target units"))[1]
            a, b = _estimate(pre, unit_key), _estimate(rnd, unit_key)
            if math.isfinite(a.value) and math.isfinite(b.value):
                detail = f"MAE in {unit}: {a.value:.3g} (pretrained) vs {b.value:.3g} (random)"
        rows.append(_row(ctx, h.category, h.task, h.metric, h.higher_is_better, values, (pre, rnd), h.metric_key,
                         detail=detail, more={VERSUS_BASELINE: _difference(ctx, pre, base, h.metric_key)}))
    return rows


def classifier_rows(ctx: DemoContext, n_findings: int,
                    get: Getter) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Macro AUROC of MLP on CLS vs Q-Former on patches (paper Fig. 5 left) and of 3D vs chunked 2.5D
    features (Fig. 5 right), each with its paired difference."""
    key, label = "macro/auroc", "macro AUROC"
    head_jobs = (("classification-mlp", "MLP on CLS"), ("classification-qformer", "Q-Former on patches"))
    values = {f"{b} · {head}": _estimate(get(job, b), key)
              for b in layout.BACKBONE_NAMES for job, head in head_jobs if get(job, b) is not None}
    heads = [_row(ctx, "classification", f"{n_findings} findings", label, True, values,
                  (get("classification-qformer", "pretrained"), get("classification-mlp", "pretrained")), key,
                  label="pretrained Q-Former − pretrained MLP",
                  detail="difference: pretrained Q-Former − pretrained MLP")] if values else []
    modes = [_row(ctx, "classification", f"{n_findings} findings, {head}", label, True,
                  {"pretrained · 3D": _estimate(get(job, "pretrained"), key),
                   "pretrained · 2.5D": _estimate(get(job, "pretrained", "2.5d"), key)},
                  (get(job, "pretrained"), get(job, "pretrained", "2.5d")), key, label="3D − 2.5D",
                  detail="difference: 3D − 2.5D")
             for job, head in head_jobs[::-1] if get(job, "pretrained") and get(job, "pretrained", "2.5d")]
    return heads, modes


def per_finding_f1(labels: pd.DataFrame, result: ProbeResult | None, findings: list[str]) -> dict[str, Any]:
    """F1 at 0.5 of each finding (the pretrained Q-Former) and its number of positive test scans."""
    out = {}
    for finding in findings if result is not None else []:
        if f"{finding}/f1@0.5" in result.metrics:
            support = int(labels.loc[labels["split"] == "test", finding].sum())
            out[finding] = {**_estimate(result, f"{finding}/f1@0.5").to_dict(), "support": support}
    return out


def comparator_rows(ctx: DemoContext, headlines: list[Headline], get: Getter) -> list[dict[str, Any]]:
    """Each comparator backbone beside the reference (pretrained) on every headline metric, with the
    paired difference comparator − pretrained (as ``voxelfm evaluate`` with ``reference: pretrained``)."""
    rows = []
    for name in layout.comparator_names(ctx.config):
        for h in headlines:
            other, reference = get(h.job, name), get(h.job, "pretrained")
            if other is None or reference is None:
                continue
            values = {"pretrained": _estimate(reference, h.metric_key), name: _estimate(other, h.metric_key)}
            rows.append(_row(ctx, h.category, h.task, h.metric, h.higher_is_better, values, (other, reference),
                             h.metric_key, label=f"{name} − pretrained", detail=f"difference: {name} − pretrained"))
    return rows


def retrieval_examples(ctx: DemoContext, labels: pd.DataFrame, res: ProbeResult,
                       findings: list[str]) -> list[dict[str, Any]]:
    """Test queries with findings, their top-5 neighbours and whether each shares a finding."""
    from voxelfm.probes.retrieval import read_neighbours

    table = labels.set_index("scan_id")

    def present(scan_id: str) -> set[str]:
        return {f for f in findings if int(table.loc[scan_id, f]) == 1}

    out = []
    for query, hits in read_neighbours(res.predictions).items():
        if not present(query) or not hits:
            continue
        out.append({"query": query, "backbone": "pretrained", "neighbours": [
            {"scan_id": sid, "similarity": sim, "match": bool(present(query) & present(sid)),
             "same_patient": str(table.loc[sid, "patient_id"]) == str(table.loc[query, "patient_id"])}
            for sid, sim in hits[:5]]})
        if len(out) >= ctx.config.n_examples:
            break
    return out


def segmentation_examples(ctx: DemoContext, res: ProbeResult) -> list[dict[str, Any]]:
    """Test scans with a predicted mask on disk and their macro Dice."""
    masks_dir = layout.probes_dir(ctx.out) / "segmentation" / "pretrained-3d" / "masks"
    dice, _counts = res.output.eval_arrays
    out = []
    for i, scan_id in enumerate(res.output.eval_ids):
        mask = masks_dir / f"{scan_id}_pred.nii.gz"
        if not mask.is_file():
            continue
        finite = dice[i][np.isfinite(dice[i])]
        out.append({"scan_id": str(scan_id), "backbone": "pretrained", "prediction": str(mask.relative_to(ctx.out)),
                    "dice": float(finite.mean()) if finite.size else None})
        if len(out) >= ctx.config.n_examples:
            break
    return out
