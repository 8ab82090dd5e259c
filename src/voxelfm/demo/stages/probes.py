"""Stage 4: probes of six task categories on both frozen backbones and the HU-histogram baseline
(report generation is stage 5).

Every probe is one :func:`voxelfm.probes.run_probe` call on a backbone's store, written to
``OUT/probes/<job>/<store>/`` (config, history, weights, predictions, metrics). On top of that:

* paired differences pretrained − random for every headline metric
  (:func:`voxelfm.metrics.paired_bootstrap` over the same test units of both runs);
* MLP on CLS vs Q-Former on patch tokens (classification, both backbones);
* full 3D vs chunked 2.5D (classification, pretrained backbone);
* a data-fraction sweep (nested subsets of the training split, several seeds; paper Fig. 4);
* examples for the report: nearest neighbours of test queries, predicted segmentation masks.

Everything the render stage needs is summarised in ``OUT/probes/summary.json``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from voxelfm.core.atomic import atomic_write_text
from voxelfm.demo import layout
from voxelfm.demo.pipeline import CheckResult, DemoContext, Stage
from voxelfm.demo.results import CATEGORIES, Estimate, TaskRow

PROBE_CATEGORIES = tuple(c for c in CATEGORIES if c != "report generation")

#: Row labels and units of the phantom's continuous targets.
TARGETS = {"age": ("age", "years"), "lung_volume_l": ("lung volume", "litres"),
           "heart_volume_ml": ("heart volume", "millilitres"), "largest_nodule_mm": ("largest nodule diameter", "mm"),
           "calcium_score": ("calcium burden score", "score points")}


@dataclass(frozen=True)
class Job:
    """One probe configuration, run on one or more stores (``backbone-mode`` keys)."""

    name: str
    task: str
    targets: tuple[str, ...] = ()
    head: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    stores: tuple[str, ...] = ("pretrained-3d", "random-3d", "histogram-3d")


@dataclass(frozen=True)
class Headline:
    """A results-table row read from a job's metrics."""

    job: str
    category: str
    task: str
    metric_key: str
    metric: str
    higher_is_better: bool


def classification_options(*, hidden_dim: int, seed: int, bootstrap: int, epochs: int | None = None) -> dict[str, Any]:
    """The demo's classification recipe (MLP on CLS and Q-Former on patches alike).

    About 150 optimizer steps per probe on ~150 training scans: class-balanced batches of 32 with
    the minority class over-sampled (the original's under-sampling gives one batch per epoch on a
    cohort this small, i.e. ten steps in all), a linear warm-up then a cosine decay, the best
    validation-AUROC epoch kept. Budgeted in epochs, so the result does not depend on the machine.
    """
    epochs = 20 if epochs is None else int(epochs)
    warm = max(1, epochs // 10)
    return {"bootstrap": bootstrap, "bootstrap_seed": seed, "balance": "oversample",
            "head_params": {"hidden_dim": hidden_dim},
            "train": {"epochs": epochs, "batch_size": 32, "lr": 1e-3, "warmup_epochs": warm,
                      "cosine_epochs": epochs - warm, "min_lr": 1e-5, "seed": seed}}


def store_path(ctx: DemoContext, key: str) -> Path:
    backbone, mode = key.split("-", 1)
    return layout.store_dir(ctx.out, backbone, mode)


def usable_binary(labels: Any, columns: list[str], min_per_class: int = 1) -> list[str]:
    """Columns with both classes (at least ``min_per_class`` each) in every split."""
    out = []
    for col in columns:
        if col not in labels.columns:
            continue
        ok = True
        for split in ("train", "val", "test"):
            values = labels.loc[labels["split"] == split, col].dropna().astype(int)
            if values.sum() < min_per_class or (len(values) - values.sum()) < min_per_class:
                ok = False
        if ok:
            out.append(col)
    return out


def usable_continuous(labels: Any, columns: list[str]) -> list[str]:
    """Numeric columns without gaps that vary in the training split."""
    import pandas as pd

    out = []
    for col in columns:
        if col not in labels.columns:
            continue
        values = pd.to_numeric(labels[col], errors="coerce")
        if values.notna().all() and values[labels["split"] == "train"].std() > 0:
            out.append(col)
    return out


def plan_jobs(ctx: DemoContext, labels: Any) -> tuple[list[Job], list[Headline], dict[str, list[str]]]:
    """The probe runs of the demo and the headline rows read from them."""
    from voxelfm.data.phantom import FINDINGS, REGRESSION_TARGETS, SEGMENTATION_LABELS

    cfg = ctx.config.probes
    findings = usable_binary(labels, list(FINDINGS))
    regression = usable_continuous(labels, list(REGRESSION_TARGETS))
    common = {"bootstrap": cfg.bootstrap, "bootstrap_seed": cfg.seed}
    train = {"epochs": cfg.epochs} if cfg.epochs is not None else {}
    head_params = {"hidden_dim": cfg.hidden_dim}
    cls_opts = classification_options(hidden_dim=cfg.hidden_dim, seed=cfg.seed, bootstrap=cfg.bootstrap,
                                      epochs=cfg.epochs)
    all_stores = ("pretrained-3d", "random-3d", "histogram-3d", "pretrained-2.5d")
    q_opts = {**cls_opts, "head_params": {"hidden_dim": cfg.qformer_hidden_dim}}
    jobs = [
        # The Q-Former costs ~10x the MLP per probe on CPU: on 3D features only (3D vs 2.5D uses the MLP).
        Job("classification-qformer", "classification", tuple(findings), "qformer", q_opts, all_stores[:3]),
        Job("classification-mlp", "classification", tuple(findings), "mlp", cls_opts, all_stores),
        Job("regression", "regression", tuple(regression), "mlp",
            {**common, "head_params": head_params, "train": {"epochs": cfg.regression_epochs, "seed": cfg.seed}}),
        Job("survival", "survival", (), "mlp",
            {**common, "head_params": head_params, "horizons": [2.0, 5.0], "train": {**train, "seed": cfg.seed}}),
        Job("retrieval", "retrieval", tuple(findings), None, common),
        Job("localisation", "localisation", (), None, {**common, "train": {**train, "seed": cfg.seed}}),
        Job("segmentation", "segmentation", (), None,
            {**common, "label_root": str(layout.cohort_dir(ctx.out)), "target_downsample": cfg.seg_downsample,
             "num_classes": len(SEGMENTATION_LABELS) + 1, "class_names": list(SEGMENTATION_LABELS.values()),
             "head_params": {"hidden_dim": cfg.seg_hidden_dim, "num_steps": 2},
             "train": {"epochs": cfg.seg_epochs, "batch_size": cfg.seg_batch_size, "seed": cfg.seed}}),
    ]
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
        Headline("segmentation", "segmentation", f"{len(SEGMENTATION_LABELS)} structures", "dice_macro",
                 "macro Dice", True),
        Headline("segmentation", "segmentation", f"{len(SEGMENTATION_LABELS)} structures", "dice_micro",
                 "micro Dice", True),
    ]
    return jobs, headlines, {"findings": findings, "regression": regression}


class ProbesStage(Stage):
    name = "probes"
    title = "Probes on both backbones (six task categories, sweeps, comparisons)"
    inputs = ("cohort", "embed")
    config_parts = ("probes", "n_examples")

    def outputs(self, ctx: DemoContext) -> list[Path]:
        return [layout.probes_dir(ctx.out)]  # run directories and summary.json

    def run(self, ctx: DemoContext) -> dict[str, Any]:
        import pandas as pd
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        from voxelfm.core.errors import VoxelFMError
        from voxelfm.probes.data import FeatureSet
        from voxelfm.probes.run import run_probe

        labels = pd.read_csv(layout.cohort_dir(ctx.out) / "labels.csv")
        # Each store is read once (CLS, patch grids, geometries) and shared by all its probes.
        stores = {key: FeatureSet.from_store(store_path(ctx, key), patches=True, name=key)
                  for key in ("pretrained-3d", "random-3d", "histogram-3d", "pretrained-2.5d")}
        jobs, headlines, used = plan_jobs(ctx, labels)
        fractions = fraction_plan(ctx, labels)
        results: dict[tuple[str, str], Any] = {}
        timings: dict[str, float] = {}
        failures: list[str] = []
        total = sum(len(j.stores) for j in jobs) + len(fractions)
        with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=ctx.console) as progress:
            bar = progress.add_task("probes", total=total)
            for job in jobs:
                for key in job.stores:
                    progress.update(bar, description=f"{job.name} · {key}")
                    try:
                        res = run_probe(job.task, stores[key], labels, target=list(job.targets) or None,
                                        head=job.head, out_dir=layout.probes_dir(ctx.out) / job.name / key,
                                        config=job.options, figures=False)
                    except VoxelFMError as exc:
                        # Small cohorts can leave a task without enough test cases (e.g. no events
                        # in the test split): say so in the report rather than abort every other task.
                        failures.append(f"{job.name} on {key}: {exc}")
                        ctx.console.print(f"[yellow]skipped {job.name} on {key}:[/] {exc}")
                    else:
                        results[(job.name, key)] = res
                        timings[f"{job.name}/{key}"] = round(res.seconds, 2)
                    progress.advance(bar)
            sweep = []
            for point in fractions:
                progress.update(bar, description=f"data fraction {point['fraction']:.0%} · {point['store']}")
                try:
                    res = run_probe("classification", stores[point["store"]], labels,
                                    target=used["findings"], head="qformer", train_ids=point["train_ids"],
                                    config={**jobs[0].options, "multilabel": "shared"}, figures=False)
                except VoxelFMError as exc:
                    failures.append(f"data fraction {point['fraction']:.2f} on {point['store']}: {exc}")
                    progress.advance(bar)
                    continue
                est = res.metrics.get("macro/auroc")
                sweep.append({"fraction": point["fraction"], "seed": point["seed"],
                              "backbone": point["store"].split("-")[0], "n_train": len(point["train_ids"]),
                              **(Estimate.from_any(est.to_dict()).to_dict() if est else {"value": None})})
                progress.advance(bar)
        summary = summarise(ctx, labels, headlines, results, sweep, used)
        summary["probe_seconds"] = timings
        summary["notes"] += [f"Probe not computed: {f}" for f in failures]
        atomic_write_text(layout.probes_summary(ctx.out), json.dumps(summary, indent=2, default=_json_default))
        return {"runs": len(results) + len(sweep), "findings": len(used["findings"])}

    def check(self, ctx: DemoContext) -> CheckResult:
        res = CheckResult()
        path = layout.probes_summary(ctx.out)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            res.problems.append(f"{path}: unreadable ({exc})")
            return res
        rows = [TaskRow.from_dict(r) for r in data.get("tasks", [])]
        have = {r.category for r in rows}
        missing = [c for c in PROBE_CATEGORIES if c not in have]
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


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


def fraction_plan(ctx: DemoContext, labels: Any) -> list[dict[str, Any]]:
    """Nested training subsets per seed: the first ``f·n`` ids of one shuffled order per seed."""
    cfg = ctx.config.probes
    train_ids = sorted(labels.loc[labels["split"] == "train", "scan_id"].astype(str))
    plan = []
    for seed in range(cfg.fraction_seeds):
        order = list(np.random.default_rng(cfg.seed + seed).permutation(train_ids))
        for fraction in cfg.fractions:
            n = max(4, int(round(fraction * len(order))))
            for store in ("pretrained-3d", "random-3d", "histogram-3d"):
                plan.append({"fraction": float(fraction), "seed": seed, "store": store, "train_ids": order[:n]})
    return plan


def _metric_group(output: Any, key: str) -> tuple[Any, list[str], tuple[np.ndarray, ...], str] | None:
    """The metric function, test units and arrays that produce ``key`` in a task output."""
    for prefix, fn, ids, arrays in output.more_evaluations:
        if prefix and key.startswith(prefix):
            return fn, list(ids), tuple(arrays), key[len(prefix):]
    return output.metric_fn, list(output.eval_ids), tuple(output.eval_arrays), key


def paired_difference(res_a: Any, res_b: Any, key: str, n_resamples: int, seed: int) -> tuple[Estimate, float | None] | None:
    """Pretrained − random for one metric, resampling the same test units of both runs."""
    from voxelfm.core.errors import VoxelFMError
    from voxelfm.metrics import paired_bootstrap

    ga, gb = _metric_group(res_a.output, key), _metric_group(res_b.output, key)
    if ga is None or gb is None or ga[1] != gb[1] or ga[3] != gb[3]:
        return None  # different test units: no paired comparison possible
    try:
        diff = paired_bootstrap(ga[0], ga[2], gb[2], n_resamples=n_resamples, seed=seed).get(ga[3])
    except (VoxelFMError, ValueError):
        return None  # the metric is undefined on this test set
    if diff is None:
        return None
    return Estimate.from_any(diff.to_dict()), diff.p_value if math.isfinite(diff.p_value) else None


def _estimate(res: Any, key: str) -> Estimate:
    est = res.metrics.get(key)
    return Estimate.from_any(est.to_dict()) if est is not None else Estimate(None)


def summarise(ctx: DemoContext, labels: Any, headlines: list[Headline], results: dict[tuple[str, str], Any],
              sweep: list[dict[str, Any]], used: dict[str, list[str]]) -> dict[str, Any]:
    """Results-table rows, comparisons, per-finding F1 and examples from the finished probe runs."""
    cfg = ctx.config.probes
    rows = []
    for h in headlines:
        pre, rnd = results.get((h.job, "pretrained-3d")), results.get((h.job, "random-3d"))
        base = results.get((h.job, f"{layout.BASELINE}-3d"))
        if pre is None or rnd is None:
            continue
        values = {"pretrained": _estimate(pre, h.metric_key), "random": _estimate(rnd, h.metric_key)}
        values[layout.BASELINE] = _estimate(base, h.metric_key) if base is not None else Estimate(None)
        if values["pretrained"].value is None and values["random"].value is None:
            continue  # e.g. no event before a horizon in this small test set
        diff = paired_difference(pre, rnd, h.metric_key, cfg.bootstrap, cfg.seed)
        vs_base = paired_difference(pre, base, h.metric_key, cfg.bootstrap, cfg.seed) if base is not None else None
        detail = ""
        if h.metric_key.endswith("/mae_sd"):
            unit_key = h.metric_key[: -len("_sd")]
            unit = TARGETS.get(unit_key.split("/")[0], ("", "target units"))[1]
            a, b = _estimate(pre, unit_key), _estimate(rnd, unit_key)
            if a.value is not None and b.value is not None:
                detail = f"MAE in {unit}: {a.value:.3g} (pretrained) vs {b.value:.3g} (random)"
        rows.append(TaskRow(h.category, h.task, h.metric, h.higher_is_better, values,
                            diff[0] if diff else None, diff[1] if diff else None, detail=detail,
                            baseline_difference=vs_base[0] if vs_base else None).to_dict())

    heads, modes = [], []
    head_jobs = (("classification-mlp", "MLP on CLS"), ("classification-qformer", "Q-Former on patches"))
    metric_key, label = "macro/auroc", "macro AUROC"
    values = {f"{backbone} · {head}": _estimate(results[(job, f"{backbone}-3d")], metric_key)
              for backbone in layout.BACKBONE_NAMES for job, head in head_jobs
              if (job, f"{backbone}-3d") in results}
    if values:
        q, m = results.get(("classification-qformer", "pretrained-3d")), results.get(("classification-mlp", "pretrained-3d"))
        diff = paired_difference(q, m, metric_key, cfg.bootstrap, cfg.seed) if q and m else None
        heads.append(TaskRow("classification", f"{len(used['findings'])} findings", label, True, values,
                             diff[0] if diff else None, diff[1] if diff else None,
                             detail="difference: pretrained Q-Former − pretrained MLP").to_dict())
    for job, head in head_jobs[::-1]:
        three, two = results.get((job, "pretrained-3d")), results.get((job, "pretrained-2.5d"))
        if three is not None and two is not None:
            diff = paired_difference(three, two, metric_key, cfg.bootstrap, cfg.seed)
            modes.append(TaskRow("classification", f"{len(used['findings'])} findings, {head}", label, True,
                                 {"pretrained · 3D": _estimate(three, metric_key),
                                  "pretrained · 2.5D": _estimate(two, metric_key)},
                                 diff[0] if diff else None, diff[1] if diff else None,
                                 detail="difference: 3D − 2.5D").to_dict())

    q_pre = results.get(("classification-qformer", "pretrained-3d"))
    per_finding = {}
    for finding in used["findings"] if q_pre is not None else []:
        est = q_pre.metrics.get(f"{finding}/f1@0.5")
        if est is not None:
            support = int(labels.loc[labels["split"] == "test", finding].sum())
            per_finding[finding] = {**Estimate.from_any(est.to_dict()).to_dict(), "support": support}

    return {
        "tasks": rows,
        "heads": heads,
        "inference_modes": modes,
        "data_fraction": {"task": f"Q-Former (one shared head) on {len(used['findings'])} findings",
                          "metric": "macro AUROC", "seeds": cfg.fraction_seeds, "points": sweep},
        "per_finding_f1": per_finding,
        "examples": {
            "retrieval": retrieval_examples(ctx, labels, results[("retrieval", "pretrained-3d")], used["findings"])
            if ("retrieval", "pretrained-3d") in results else [],
            "segmentation": segmentation_examples(ctx, results[("segmentation", "pretrained-3d")])
            if ("segmentation", "pretrained-3d") in results else [],
        },
        "used_targets": used,
        "notes": [
            f"Classification probes cover the {len(used['findings'])} findings with both classes in every split.",
            "Pretraining saw only the training-split scans (no labels); probes were trained on the training "
            "split, selected on validation and evaluated once on the test split.",
        ],
    }


def retrieval_examples(ctx: DemoContext, labels: Any, res: Any, findings: list[str]) -> list[dict[str, Any]]:
    """Test queries with findings, their top-5 neighbours and whether each shares a finding."""
    table = labels.set_index("scan_id")
    preds = res.predictions
    out = []
    for _, row in preds.iterrows():
        query = str(row["scan_id"])
        q_findings = {f for f in findings if int(table.loc[query, f]) == 1}
        if not q_findings or not isinstance(row["neighbours"], str):
            continue
        neighbours = []
        for scan_id, sim in list(zip(row["neighbours"].split(";"), str(row["similarities"]).split(";"),
                                     strict=True))[:5]:
            n_findings = {f for f in findings if int(table.loc[scan_id, f]) == 1}
            neighbours.append({"scan_id": scan_id, "similarity": float(sim), "match": bool(q_findings & n_findings),
                               "same_patient": str(table.loc[scan_id, "patient_id"]) == str(table.loc[query, "patient_id"])})
        out.append({"query": query, "backbone": "pretrained", "neighbours": neighbours})
        if len(out) >= ctx.config.n_examples:
            break
    return out


def segmentation_examples(ctx: DemoContext, res: Any) -> list[dict[str, Any]]:
    """Test scans with a predicted mask on disk and their macro Dice."""
    masks_dir = layout.probes_dir(ctx.out) / "segmentation" / "pretrained-3d" / "masks"
    dice, _counts = res.output.eval_arrays
    out = []
    for i, scan_id in enumerate(res.output.eval_ids):
        mask = masks_dir / f"{scan_id}_pred.nii.gz"
        if not mask.is_file():
            continue
        finite = dice[i][np.isfinite(dice[i])]
        out.append({"scan_id": str(scan_id), "backbone": "pretrained",
                    "prediction": str(mask.relative_to(ctx.out)),
                    "dice": float(finite.mean()) if finite.size else None})
        if len(out) >= ctx.config.n_examples:
            break
    return out
