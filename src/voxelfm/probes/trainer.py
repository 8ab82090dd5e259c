"""One generic probe trainer: epochs, optional LR schedule, noise augmentation, best-val selection.

Tasks supply three callables: ``batches(rng)`` yields training batches (dicts with ``x`` and any
of ``mask``, ``pos``, ``y``, ...), ``loss_fn(model, batch)`` returns a scalar loss, and
``validate(model)`` returns validation metrics. The trainer keeps the state with the best
``monitor`` value (the original's rule: no early stopping, fixed epochs, best validation state).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from voxelfm.core.config_check import Rule, check_dataclass, from_mapping
from voxelfm.core.errors import ConfigError

log = logging.getLogger(__name__)

Batch = dict[str, Any]

#: Rows of the standard-normal bank that token-noise augmentation draws from (see add_noise).
NOISE_BANK_ROWS = 65536


#: Ranges and choices of the training options (types come from the annotations below).
TRAIN_RULES: dict[str, Rule] = {
    "epochs": Rule(low=1), "batch_size": Rule(low=1), "lr": Rule(low=0, low_open=True),
    "weight_decay": Rule(low=0), "optimizer": Rule(choices=("adamw", "sgd")), "momentum": Rule(low=0, high=1),
    "noise_sigma": Rule(low=0), "noise_p": Rule(low=0, high=1), "warmup_epochs": Rule(low=0),
    "cosine_epochs": Rule(low=0), "min_lr": Rule(low=0), "grad_clip": Rule(low=0, low_open=True),
    "max_minutes": Rule(low=0, low_open=True), "threads": Rule(low=1),
}


@dataclass
class TrainConfig:
    """Optimisation settings (defaults: docs/original.md §4.1 classification — AdamW, constant lr 1e-3, noise σ 0.1)."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adamw"
    momentum: float = 0.9
    noise_sigma: float = 0.1
    noise_p: float = 1.0
    warmup_epochs: float = 0.0
    cosine_epochs: float = 0.0
    min_lr: float | None = None
    grad_clip: float | None = None
    seed: int = 4
    max_minutes: float | None = None
    #: torch intra-op threads while training (restored afterwards); None leaves torch's setting.
    #: Small probe heads often train faster on 1 thread, especially on a busy machine.
    threads: int | None = None

    def __post_init__(self) -> None:
        check_dataclass(self, TRAIN_RULES, prefix="train.")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return from_mapping(cls, data, what="training option", prefix="train.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    model: nn.Module
    best_epoch: int
    best_score: float
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def lr_at(step: int, steps_per_epoch: int, config: TrainConfig) -> float:
    """Linear warm-up ``min_lr → lr``, cosine ``lr → min_lr``, then ``min_lr`` (constant by default)."""
    low = config.lr if config.min_lr is None else config.min_lr
    warm = int(config.warmup_epochs * steps_per_epoch)
    cos = int(config.cosine_epochs * steps_per_epoch)
    if step < warm:
        return low + (config.lr - low) * step / max(warm, 1)
    if step < warm + cos:
        frac = (step - warm) / max(cos, 1)
        return low + 0.5 * (config.lr - low) * (1 + math.cos(math.pi * frac))
    return low if (warm or cos) else config.lr


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    raise ConfigError(f"unknown optimizer {config.optimizer!r} (use 'adamw' or 'sgd')")


def add_noise(x: torch.Tensor | list[torch.Tensor], sigma: float, p: float, gen: torch.Generator,
              bank: torch.Tensor | None = None, bank_scaled: bool = False) -> Any:
    """Add N(0, σ²) to every feature of a sample with probability ``p`` (training only, docs/original.md §4).

    ``x`` is a batch tensor (first axis = samples) or a list of per-sample tensors. With ``bank``
    (rows of standard-normal vectors of the feature size), each token's noise is a randomly chosen
    bank row instead of a fresh draw: drawing millions of normals per batch costs more than the
    probe's forward pass on CPU, while indexing a 65k-row bank is a cheap copy. ``bank_scaled``:
    the bank's rows were multiplied by ``sigma`` once already (the same products, one pass fewer
    over every batch).
    """
    if sigma <= 0 or p <= 0:
        return x
    if isinstance(x, list):
        return [add_noise(item.unsqueeze(0), sigma, p, gen, bank, bank_scaled)[0] for item in x]
    if bank is not None and bank.shape[-1] == x.shape[-1]:
        rows = torch.randint(0, bank.shape[0], (x.shape[:-1].numel(),), generator=gen)
        noise = bank.index_select(0, rows).view(x.shape)
        if not bank_scaled:
            noise.mul_(sigma)
    else:
        noise = torch.randn(x.shape, generator=gen, dtype=x.dtype)
        noise.mul_(sigma)  # fresh tensor: in-place keeps the memory passes over a large batch to a minimum
    if p < 1:
        keep = (torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), generator=gen) < p).to(x.dtype)
        noise.mul_(keep)
    return noise.add_(x)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Temporarily set torch's intra-op thread count."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train(
    model: nn.Module,
    *,
    batches: Callable[[np.random.Generator], Iterable[Batch]],
    loss_fn: Callable[[nn.Module, Batch], torch.Tensor],
    validate: Callable[[nn.Module], dict[str, float]],
    monitor: str,
    mode: str = "max",
    config: TrainConfig,
) -> TrainResult:
    """Train ``model`` for ``config.epochs`` and return it loaded with the best-validation state."""
    # Dropout draws from torch's global generator: seed it inside a fork so that the caller's
    # random state is left as it was.
    with torch_threads(config.threads), torch.random.fork_rng(devices=[]):
        return _train(model, batches, loss_fn, validate, monitor, mode, config)


def _train(model: nn.Module, batches: Callable[[np.random.Generator], Iterable[Batch]],
           loss_fn: Callable[[nn.Module, Batch], torch.Tensor], validate: Callable[[nn.Module], dict[str, float]],
           monitor: str, mode: str, config: TrainConfig) -> TrainResult:
    if mode not in ("max", "min"):
        raise ConfigError(f"monitor mode must be 'max' or 'min', got {mode!r}")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    opt = _optimizer(model, config)
    best_state: dict[str, torch.Tensor] | None = None
    best_score, best_epoch = (-math.inf if mode == "max" else math.inf), -1
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    step = 0
    steps_per_epoch: int | None = None
    bank: torch.Tensor | None = None
    for epoch in range(config.epochs):
        model.train()
        losses = []
        epoch_batches = list(batches(rng))
        steps_per_epoch = steps_per_epoch or max(1, len(epoch_batches))
        for batch in epoch_batches:
            for group in opt.param_groups:
                group["lr"] = lr_at(step, steps_per_epoch, config)
            batch = dict(batch)
            x = batch["x"]
            if bank is None and isinstance(x, torch.Tensor) and x.dim() >= 3:  # token batches only
                bank = torch.randn((NOISE_BANK_ROWS, x.shape[-1]), generator=gen, dtype=x.dtype)
                bank.mul_(config.noise_sigma)  # scaled once here instead of once per batch
            batch["x"] = add_noise(x, config.noise_sigma, config.noise_p, gen, bank, bank_scaled=True)
            if isinstance(batch.get("cls"), torch.Tensor):  # a head's global (CLS) input gets the same noise
                batch["cls"] = add_noise(batch["cls"], config.noise_sigma, config.noise_p, gen)
            loss = loss_fn(model, batch)
            if not torch.isfinite(loss):
                raise ConfigError(f"training diverged at epoch {epoch} (loss {loss.item()}); lower the learning rate")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            opt.step()
            losses.append(float(loss.detach()))
            step += 1
        model.eval()
        with torch.no_grad():
            val = validate(model)
        score = float(val.get(monitor, math.nan))
        record = {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else math.nan,
                  "lr": opt.param_groups[0]["lr"], **{f"val_{k}": float(v) for k, v in val.items()}}
        history.append(record)
        better = math.isfinite(score) and (score > best_score if mode == "max" else score < best_score)
        if better or best_state is None:
            best_score = score if math.isfinite(score) else best_score
            best_epoch = epoch
            best_state = copy.deepcopy(model.state_dict())
        log.debug("epoch %d: %s", epoch, record)
        if config.max_minutes is not None and time.perf_counter() - start > 60 * config.max_minutes:
            log.info("stopping after epoch %d: time budget of %.1f min reached", epoch, config.max_minutes)
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return TrainResult(model, best_epoch, best_score, history, time.perf_counter() - start)


__all__ = ["TrainConfig", "TrainResult", "add_noise", "lr_at", "train"]
