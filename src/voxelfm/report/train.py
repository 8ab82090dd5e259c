"""Two-stage training of the report model (docs/original.md §5.3).

Stage 1 trains the projector only (LM frozen); stage 2 adds LoRA adapters on the LM's attention and
MLP projections (r 16, α 32, dropout 0.05, ``q,k,v,gate,up,down`` as in the paper) — or, for the
tiny from-scratch fallback LM, trains the whole LM (``stage2_mode="full"``). Both stages use AdamW,
a linear warm-up from ``min_lr`` over 3 % of the steps and a cosine decay back to ``min_lr``, and
Gaussian noise on the input features (σ 0.1). Defaults are sized for a CPU run of minutes; the
paper's values are noted on each field.

Run directory layout::

    RUN/config.json          LM location, chat format, projector + training config (written last)
    RUN/projector.{json,safetensors}   final projector; RUN/stage1/ holds the stage-1 projector
    RUN/lora/                PEFT adapter (stage2_mode="lora")
    RUN/lm/                  the LM itself when it was built here or fully trained (fallback)
    RUN/references.jsonl     every report record with its split (reference texts for evaluation)
    RUN/train_log.jsonl      one JSON line per logged step; RUN/training.json summary
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from voxelfm.core.atomic import atomic_write_text
from voxelfm.core.config_check import Rule, check_dataclass, from_mapping
from voxelfm.core.device import PRECISION_ALIASES, autocast_dtype, precision_name, resolve_device
from voxelfm.core.errors import DataError, located
from voxelfm.report.chat import DEFAULT_INSTRUCTION, DEFAULT_SYSTEM_PROMPT, ChatFormat
from voxelfm.report.dataset import (
    FeatureMap,
    ReportRecord,
    VisionTokens,
    check_features,
    vision_tokens,
    write_records,
)

log = logging.getLogger(__name__)

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj", "down_proj")


_POSITIVE = Rule(low=0, low_open=True)
#: Precision names (:mod:`voxelfm.core.device`; ``float32``/``bfloat16`` are read as aliases).
LM_DTYPES = ("fp32", "bf16")
AUTOCAST_DTYPES = ("auto", "fp32", "bf16")
#: Ranges and choices of the report training options (types come from the annotations below).
REPORT_TRAIN_RULES: dict[str, Rule] = {
    "num_queries": Rule(low=1), "projector_hidden": Rule(low=1), "projector_heads": Rule(low=1),
    "projector_dropout": Rule(low=0, high=1, high_open=True), "max_tokens": Rule(low=1),
    "stage1_epochs": Rule(low=0), "stage1_lr": _POSITIVE, "stage2_epochs": Rule(low=0), "stage2_lr": _POSITIVE,
    "stage2_mode": Rule(choices=("lora", "full")), "min_lr": Rule(low=0), "warmup_frac": Rule(low=0, high=1),
    "weight_decay": Rule(low=0), "batch_size": Rule(low=1), "grad_accum": Rule(low=1), "lora_r": Rule(low=1),
    "lora_alpha": _POSITIVE, "lora_dropout": Rule(low=0, high=1, high_open=True), "noise_std": Rule(low=0),
    "stage1_minutes": Rule(low=0), "stage2_minutes": Rule(low=0), "lm_dtype": Rule(choices=LM_DTYPES),
    "dtype": Rule(choices=AUTOCAST_DTYPES), "max_val_examples": Rule(low=0), "log_every": Rule(low=1),
}


@dataclass
class ReportTrainConfig:
    """Everything that shapes a training run (saved into ``RUN/config.json``)."""

    num_queries: int = 32  # paper 128
    projector_hidden: int = 512  # paper 2048
    projector_heads: int = 8
    projector_dropout: float = 0.1
    input_norm: bool = True  # paper: none
    position_encoding: bool = True  # paper: none
    standardize_features: bool = True  # paper: none (voxelfm.report.projector: training-set statistics)
    summary_token: bool = True  # paper: none (one more image token from the scan's standardised CLS and mean patch)
    use_cls: bool = True
    max_tokens: int = 4096  # patch grids above this are average-pooled
    text_field: str = "report"
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    instruction: str = DEFAULT_INSTRUCTION
    stage1_epochs: float = 2.0  # paper 1
    stage1_lr: float = 1e-3  # paper 1e-4 (with 128 queries, batch 32, many more scans)
    stage2_epochs: float = 4.0  # paper 10; 0 skips stage 2
    stage2_lr: float = 3e-4  # paper 2e-5
    stage2_mode: str = "lora"  # "lora" | "full" (train every LM weight; for the tiny fallback)
    min_lr: float = 1e-6
    warmup_frac: float = 0.03
    weight_decay: float = 0.0
    batch_size: int = 4  # paper 1 x grad-accum 32 / 16
    grad_accum: int = 1
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] = LORA_TARGETS
    noise_std: float = 0.1
    stage1_minutes: float | None = None  # wall-clock cap per stage (None = run all epochs)
    stage2_minutes: float | None = None
    lm_dtype: str = "fp32"  # weights of the LM: "fp32" | "bf16" (large LMs on a GPU)
    dtype: str = "auto"  # autocast: "auto" (bf16 where the CPU/GPU runs it natively) | "fp32" | "bf16"
    max_val_examples: int = 32
    log_every: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        # Canonical precision names (old run configs say "float32"/"bfloat16"); other values are
        # left for the checker, which names the key and the accepted names.
        for key in ("lm_dtype", "dtype"):
            value = getattr(self, key)
            if isinstance(value, str) and value.lower() in PRECISION_ALIASES:
                setattr(self, key, PRECISION_ALIASES[value.lower()])
        check_dataclass(self, REPORT_TRAIN_RULES)  # types, ranges and choices, one line naming the key
        self.lora_targets = tuple(self.lora_targets)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReportTrainConfig:
        return from_mapping(cls, data, what="report training option")

    @property
    def chat(self) -> ChatFormat:
        return ChatFormat(system_prompt=self.system_prompt, instruction=self.instruction)


@dataclass
class TrainExample:
    scan_id: str
    tokens: VisionTokens
    input_ids: list[int]
    labels: list[int]


@dataclass
class StageResult:
    name: str
    steps: int = 0
    planned_steps: int = 0
    seconds: float = 0.0
    final_train_loss: float | None = None
    val_loss_before: float | None = None
    val_loss_after: float | None = None
    stopped_by_budget: bool = False
    trainable_parameters: int = 0
    losses: list[float] = field(default_factory=list)


def _schedule(progress: float, lr: float, min_lr: float, warmup_frac: float) -> float:
    """Linear warm-up from min_lr, then cosine to min_lr (the original LLaVATrainer schedule).

    ``progress`` in [0, 1] is the fraction of the stage done: of its steps, or of its time
    budget when that runs out first, so a time-capped stage still anneals to ``min_lr``.
    """
    progress = min(max(progress, 0.0), 1.0)
    if warmup_frac > 0 and progress < warmup_frac:
        return min_lr + (lr - min_lr) * progress / warmup_frac
    rest = (progress - warmup_frac) / max(1e-12, 1.0 - warmup_frac)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * rest))


def _batches(n: int, batch: int, rng: random.Random) -> list[list[int]]:
    order = list(range(n))
    rng.shuffle(order)
    return [order[i:i + batch] for i in range(0, n, batch)]


def _mean_loss(model: Any, examples: Sequence[TrainExample], batch: int,
               amp: torch.dtype | None, device: torch.device) -> float | None:
    if not examples:
        return None
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad(), torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
        for i in range(0, len(examples), batch):
            chunk = examples[i:i + batch]
            loss = model.loss([e.tokens for e in chunk], [e.input_ids for e in chunk],
                              [e.labels for e in chunk])
            total += float(loss) * len(chunk)
            count += len(chunk)
    model.train(was_training)
    return total / count


def _stage_length(n_train: int, epochs: float, cfg: ReportTrainConfig) -> tuple[int, int]:
    """Micro-batches and optimizer steps of a stage of ``epochs`` over ``n_train`` examples."""
    micro_per_epoch = math.ceil(n_train / cfg.batch_size)
    total_micro = max(1, int(round(epochs * micro_per_epoch)))
    return total_micro, max(1, math.ceil(total_micro / cfg.grad_accum))


def _micro_batches(n: int, batch: int, rng: random.Random, total: int) -> Iterator[list[int]]:
    """``total`` batches of example indices; a new shuffled epoch starts whenever one runs out."""
    plan: list[list[int]] = []
    for _ in range(total):
        if not plan:
            plan = _batches(n, batch, rng)
        yield plan.pop(0)


def _progress(step: int, total_steps: int, t0: float, minutes: float | None) -> float:
    """Fraction of the stage done: of its steps, or of its time budget when that runs out first."""
    progress = step / total_steps
    if minutes is not None:
        progress = max(progress, (time.perf_counter() - t0) / (60 * minutes))
    return progress


def _out_of_time(t0: float, minutes: float | None) -> bool:
    return minutes is not None and time.perf_counter() - t0 > 60 * minutes


def _train_loss(model: Any, chunk: Sequence[TrainExample], cfg: ReportTrainConfig, amp: torch.dtype | None,
                device: torch.device, gen: torch.Generator, name: str, step: int) -> torch.Tensor:
    """Loss of one micro-batch (noisy features); a non-finite loss stops the run with a DataError."""
    with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
        loss = model.loss([e.tokens for e in chunk], [e.input_ids for e in chunk],
                          [e.labels for e in chunk], noise_std=cfg.noise_std, generator=gen)
    if not torch.isfinite(loss):
        raise DataError(located(name, f"non-finite training loss at step {step}"))
    return loss


def _optimizer_step(optim: torch.optim.Optimizer, params: list[torch.nn.Parameter]) -> None:
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optim.step()
    optim.zero_grad(set_to_none=True)


def _log_window(log_file: Any, result: StageResult, total_steps: int, window: list[float], lr: float,
                t0: float) -> None:
    """Record the mean loss of the steps since the last log line (train_log.jsonl and the log)."""
    mean = sum(window) / len(window)
    result.losses.append(mean)
    record = {"stage": result.name, "step": result.steps, "of": total_steps, "loss": mean, "lr": lr,
              "seconds": round(time.perf_counter() - t0, 1)}
    log_file.write(json.dumps(record) + "\n")
    log_file.flush()
    log.info("%s step %d/%d loss %.4f", result.name, result.steps, total_steps, mean)


def _run_stage(name: str, model: Any, params: list[torch.nn.Parameter], train: Sequence[TrainExample],
               val: Sequence[TrainExample], *, epochs: float, lr: float, minutes: float | None,
               cfg: ReportTrainConfig, device: torch.device, amp: torch.dtype | None,
               log_path: Path, val_before: float | None = None) -> StageResult:
    """Train ``params`` for ``epochs`` (or until ``minutes`` run out) with AdamW and the schedule."""
    result = StageResult(name=name, trainable_parameters=sum(p.numel() for p in params))
    if epochs <= 0:
        return result
    rng = random.Random(cfg.seed + (0 if name == "stage1" else 1))
    gen = torch.Generator().manual_seed(cfg.seed)
    total_micro, total_steps = _stage_length(len(train), epochs, cfg)
    result.planned_steps = total_steps
    optim = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    # The previous stage's final validation loss is this stage's starting point: not recomputed.
    result.val_loss_before = (val_before if val_before is not None
                              else _mean_loss(model, val, cfg.batch_size, amp, device))
    model.train()
    t0 = time.perf_counter()
    window: list[float] = []
    with open(log_path, "a") as log_file:
        for micro, idx in enumerate(_micro_batches(len(train), cfg.batch_size, rng, total_micro)):
            step = micro // cfg.grad_accum
            for group in optim.param_groups:
                group["lr"] = _schedule(_progress(step, total_steps, t0, minutes), lr, cfg.min_lr, cfg.warmup_frac)
            loss = _train_loss(model, [train[i] for i in idx], cfg, amp, device, gen, name, step)
            (loss / cfg.grad_accum).backward()
            window.append(float(loss.detach()))
            last = micro + 1 == total_micro
            if (micro + 1) % cfg.grad_accum and not last:
                continue  # accumulating gradients
            _optimizer_step(optim, params)
            result.steps += 1
            if result.steps % cfg.log_every == 0 or last:
                _log_window(log_file, result, total_steps, window, optim.param_groups[0]["lr"], t0)
                window = []
            if _out_of_time(t0, minutes):
                result.stopped_by_budget = True
                log.info("%s stopped at its %.1f-minute budget after %d/%d steps", name,
                         minutes, result.steps, total_steps)
                if window:
                    result.losses.append(sum(window) / len(window))
                break
    optim.zero_grad(set_to_none=True)
    result.seconds = round(time.perf_counter() - t0, 1)
    result.final_train_loss = result.losses[-1] if result.losses else None
    result.val_loss_after = _mean_loss(model, val, cfg.batch_size, amp, device)
    return result


def _examples(records: Sequence[ReportRecord], features: FeatureMap, tokenizer: Any,
              cfg: ReportTrainConfig) -> list[TrainExample]:
    from voxelfm.report.chat import encode_example

    out = []
    chat = cfg.chat
    for rec in records:
        cls, patch = features[rec.scan_id]
        ids, labels = encode_example(tokenizer, chat, rec.text(cfg.text_field))
        out.append(TrainExample(rec.scan_id, vision_tokens(cls, patch, use_cls=cfg.use_cls,
                                                           max_tokens=cfg.max_tokens), ids, labels))
    return out


def _fit_standardization(projector: Any, train: Sequence[TrainExample]) -> None:
    """The projector's feature statistics from the training scans only (patch tokens and CLS apart)."""
    projector.fit_standardization([(e.tokens.tokens[:-1], e.tokens.tokens[-1]) if e.tokens.has_cls
                                   else (e.tokens.tokens, None) for e in train])


def resolve_or_fallback(lm: str | os.PathLike[str] | None, records: Sequence[ReportRecord],
                        out_dir: Path, cfg: ReportTrainConfig) -> tuple[Path, bool]:
    """The LM directory to train with; builds the tiny offline fallback when SmolLM2 is missing."""
    from voxelfm.core.errors import CheckpointError
    from voxelfm.report.lm import FALLBACK_NOTE, build_tiny_lm, resolve_lm

    if lm is not None and os.fspath(lm) != "tiny":
        return resolve_lm(lm), False
    if lm is None:
        try:
            return resolve_lm("smollm2"), False
        except CheckpointError as exc:
            msg = f"{exc}. Falling back: {FALLBACK_NOTE}"
            warnings.warn(msg, stacklevel=2)
            log.warning(msg)
    texts = [r.text(cfg.text_field) for r in records if r.split == "train"]
    texts += [cfg.system_prompt, cfg.instruction]
    return build_tiny_lm(texts, out_dir / "lm", seed=cfg.seed), True


def _usable_records(features: FeatureMap, reports: Sequence[ReportRecord], run: Path,
                    cfg: ReportTrainConfig) -> tuple[list[ReportRecord], list[ReportRecord], int]:
    """Training and validation records that have features, and the feature width (checked)."""
    records = [r for r in reports if r.scan_id in features]
    train_recs = [r for r in records if r.split == "train"]
    val_recs = [r for r in records if r.split == "val"][: cfg.max_val_examples]
    if not train_recs:
        raise DataError(located(run, "no training reports with features (split == 'train')"))
    return train_recs, val_recs, check_features(features, [r.scan_id for r in records])


def _build_model(lm_dir: Path, width: int, cfg: ReportTrainConfig, dev: torch.device) -> tuple[Any, Any, Any, Any]:
    """``(model, lm, tokenizer, projector)``: the frozen LM and a fresh projector from ``width`` to it."""
    from voxelfm.report.lm import load_lm
    from voxelfm.report.model import ReportModel
    from voxelfm.report.projector import FeatureProjector, ProjectorConfig

    model_lm, tokenizer = load_lm(lm_dir, dtype=cfg.lm_dtype)
    for p in model_lm.parameters():
        p.requires_grad_(False)
    proj_cfg = ProjectorConfig(in_dim=width, out_dim=model_lm.config.hidden_size,
                               hidden_dim=cfg.projector_hidden, num_queries=cfg.num_queries,
                               num_heads=cfg.projector_heads, dropout=cfg.projector_dropout,
                               input_norm=cfg.input_norm, position_encoding=cfg.position_encoding,
                               standardize=cfg.standardize_features, summary_token=cfg.summary_token)
    projector = FeatureProjector(proj_cfg)
    model = ReportModel(model_lm, tokenizer, projector, cfg.chat, use_cls=cfg.use_cls).to(dev)
    return model, model_lm, tokenizer, projector


def _stage2_parameters(model: Any, model_lm: Any, cfg: ReportTrainConfig) -> list[torch.nn.Parameter]:
    """The LM weights stage 2 trains: LoRA adapters (wrapping ``model.lm``), or every LM weight."""
    if cfg.stage2_mode == "lora":
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=list(cfg.lora_targets), task_type="CAUSAL_LM")
        model.lm = get_peft_model(model_lm, lora)
        return [p for p in model.lm.parameters() if p.requires_grad]
    for p in model_lm.parameters():
        p.requires_grad_(True)
    return list(model_lm.parameters())


def _save_stage2(model: Any, model_lm: Any, tokenizer: Any, run: Path, cfg: ReportTrainConfig) -> Path | None:
    """Write the LoRA adapter (RUN/lora) or the fully trained LM (RUN/lm, returned)."""
    if cfg.stage2_mode == "lora":
        model.lm.save_pretrained(str(run / "lora"))
        return None
    model_lm.save_pretrained(str(run / "lm"), safe_serialization=True)
    tokenizer.save_pretrained(str(run / "lm"))
    return run / "lm"


def _write_run_config(run: Path, *, lm_dir: Path, saved_lm_dir: Path, built_here: bool, width: int,
                      train_ex: Sequence[TrainExample], cfg: ReportTrainConfig) -> None:
    """RUN/config.json, written last: its presence marks a finished run."""
    lm_ref = "lm" if saved_lm_dir == run / "lm" else str(Path(lm_dir).resolve())
    run_config = {
        "format": "voxelfm-report-run/1",
        "lm": lm_ref,
        "lm_source": str(lm_dir) if not built_here else "tiny-from-scratch",
        "lm_fallback": built_here,
        "lora": cfg.stage2_epochs > 0 and cfg.stage2_mode == "lora",
        "feature_dim": width,
        "max_report_tokens": max(sum(1 for t in e.labels if t >= 0) for e in train_ex),
        "train": asdict(cfg),
    }
    atomic_write_text(run / "config.json", json.dumps(run_config, indent=2))


def train_report_model(
    features: FeatureMap,
    reports: Sequence[ReportRecord],
    *,
    lm: str | os.PathLike[str] | None = None,
    out_dir: str | os.PathLike[str],
    config: ReportTrainConfig | None = None,
    device: str | torch.device | None = None,
) -> Path:
    """Train projector (stage 1) then LoRA/full LM (stage 2) on the ``train`` split; return RUN.

    ``features``: ``{scan_id: (cls, patch)}``; ``reports``: records with splits (``val`` gives the
    validation loss, ``val``/``test`` references are kept for evaluation). ``lm``: a local HF
    directory, a cached name (``"smollm2"``), ``"tiny"`` for the from-scratch fallback, or None
    (SmolLM2 if cached, else the fallback with a warning). ``device``: ``cpu`` (default), ``cuda``,
    ``cuda:N`` or ``auto`` (:func:`voxelfm.core.device.resolve_device`).
    """
    cfg = config or ReportTrainConfig()
    dev = resolve_device(device if device is not None else "cpu", key="device")
    run = Path(out_dir)
    run.mkdir(parents=True, exist_ok=True)
    for stale in ("config.json", "train_log.jsonl"):
        (run / stale).unlink(missing_ok=True)
    train_recs, val_recs, width = _usable_records(features, reports, run, cfg)
    torch.manual_seed(cfg.seed)
    amp = autocast_dtype(cfg.dtype, dev)

    lm_dir, built_here = resolve_or_fallback(lm, reports, run, cfg)
    if built_here and cfg.stage2_mode == "lora":
        # LoRA on a randomly initialised LM cannot teach it a language: train all of it instead.
        cfg = replace(cfg, stage2_mode="full", stage2_epochs=max(cfg.stage2_epochs, 1.0))
    model, model_lm, tokenizer, projector = _build_model(lm_dir, width, cfg, dev)
    train_ex = _examples(train_recs, features, tokenizer, cfg)
    val_ex = _examples(val_recs, features, tokenizer, cfg)
    _fit_standardization(projector, train_ex)
    log_path = run / "train_log.jsonl"

    # Stage 1: projector only.
    s1 = _run_stage("stage1", model, list(projector.parameters()), train_ex, val_ex,
                    epochs=cfg.stage1_epochs, lr=cfg.stage1_lr, minutes=cfg.stage1_minutes,
                    cfg=cfg, device=dev, amp=amp, log_path=log_path)
    projector.save(run / "stage1")

    # Stage 2: projector + LoRA (or + every LM weight for the from-scratch fallback).
    s2 = StageResult(name="stage2")
    saved_lm_dir = lm_dir
    if cfg.stage2_epochs > 0:
        lm_params = _stage2_parameters(model, model_lm, cfg)
        s2 = _run_stage("stage2", model, list(projector.parameters()) + lm_params, train_ex, val_ex,
                        epochs=cfg.stage2_epochs, lr=cfg.stage2_lr, minutes=cfg.stage2_minutes,
                        cfg=cfg, device=dev, amp=amp, log_path=log_path,
                        val_before=s1.val_loss_after)
        saved_lm_dir = _save_stage2(model, model_lm, tokenizer, run, cfg) or lm_dir
    projector.save(run)

    write_records(run / "references.jsonl", (r.to_dict() for r in reports))
    summary = {"stages": [asdict(s1), asdict(s2)], "n_train": len(train_ex), "n_val": len(val_ex),
               "autocast": precision_name(amp), "device": str(dev)}
    atomic_write_text(run / "training.json", json.dumps(summary, indent=2))
    _write_run_config(run, lm_dir=lm_dir, saved_lm_dir=saved_lm_dir, built_here=built_here, width=width,
                      train_ex=train_ex, cfg=cfg)
    return run
