"""Stage 1: generate the synthetic chest-CT cohort (``voxelfm.data.phantom``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from voxelfm.core.stages import CheckResult, Stage
from voxelfm.demo import layout
from voxelfm.demo.config import DemoContext

SPLITS = ("train", "val", "test")


class CohortStage(Stage):
    name = "cohort"
    title = "Generate the synthetic CT cohort"
    config_parts = ("cohort",)

    def outputs(self, ctx: DemoContext) -> list[Path]:
        return [layout.cohort_dir(ctx.out)]

    def run(self, ctx: DemoContext) -> dict[str, Any]:
        from voxelfm.core.errors import ConfigError
        from voxelfm.core.progress import progress_bar
        from voxelfm.data.phantom import phantom_config, write_cohort

        cfg = ctx.config.cohort
        phantom = phantom_config(cfg.prevalence, cfg.conspicuity)  # None: the default phantom
        with progress_bar(ctx.console) as progress:
            task = progress.add_task(f"phantoms ({cfg.phantom_size}, {cfg.format})", total=cfg.n_scans)

            def generate(overwrite: bool) -> None:
                write_cohort(layout.cohort_dir(ctx.out), n=cfg.n_scans, seed=cfg.seed, format=cfg.format,
                             size=cfg.phantom_size, config=phantom, overwrite=overwrite,
                             split_fractions=cfg.split_fractions,
                             progress=lambda done, _total: progress.update(task, completed=done))

            try:
                generate(overwrite=False)  # resumes a cohort interrupted with the same settings
            except ConfigError:
                # The folder holds a cohort of another demo size: this demo owns it, so replace it.
                ctx.console.print("[yellow]cohort settings changed: regenerating the cohort[/]")
                generate(overwrite=True)
        return {"n_scans": cfg.n_scans, "format": cfg.format, "size": cfg.phantom_size,
                "prevalence": cfg.prevalence, "conspicuity": cfg.conspicuity}

    def check(self, ctx: DemoContext) -> CheckResult:
        return check_cohort(layout.cohort_dir(ctx.out), ctx.config.cohort.n_scans)


def check_cohort(root: Path, n_scans: int) -> CheckResult:
    """labels.csv, scans, label maps and reports all present, readable and consistent."""
    import pandas as pd

    res = CheckResult()
    labels_path = root / "labels.csv"
    try:
        labels = pd.read_csv(labels_path)
    except (OSError, ValueError) as exc:
        res.problems.append(f"{labels_path}: unreadable ({exc})")
        return res
    need = {"patient_id", "scan_id", "split", "path", "label_path"}
    if not res.require(need <= set(labels.columns), f"{labels_path}: missing columns {sorted(need - set(labels.columns))}"):
        return res
    res.require(len(labels) == n_scans, f"{labels_path}: {len(labels)} scans, expected {n_scans}")
    res.require(labels["scan_id"].is_unique, f"{labels_path}: duplicate scan ids")
    for split in SPLITS:
        res.require(int((labels["split"] == split).sum()) > 0, f"{labels_path}: no {split!r} scans")
    # Patient-level splits: one patient's scans never straddle splits.
    straddling = labels.groupby("patient_id")["split"].nunique()
    res.require(int((straddling > 1).sum()) == 0, f"{labels_path}: patients in more than one split")
    for col in ("path", "label_path"):
        missing = [p for p in labels[col] if not _non_empty(root / str(p))]
        res.require(not missing, f"{root}: {len(missing)} {col} entries missing or empty (e.g. {missing[:2]})")
    reports = root / "reports.jsonl"
    try:
        ids = [json.loads(line)["scan_id"] for line in reports.read_text().splitlines() if line.strip()]
    except (OSError, json.JSONDecodeError, KeyError) as exc:
        res.problems.append(f"{reports}: unreadable ({exc})")
        return res
    res.require(sorted(ids) == sorted(labels["scan_id"]), f"{reports}: scan ids differ from labels.csv")
    return res


def _non_empty(path: Path) -> bool:
    """A NIfTI file with bytes, or a DICOM folder with at least one file."""
    if path.is_dir():
        return any(p.is_file() and p.stat().st_size > 0 for p in path.rglob("*"))
    return path.is_file() and path.stat().st_size > 0
