"""Training monitor: JSONL metrics (+ TensorBoard when installed), effective rank of the teacher's
CLS embeddings, and one-line warnings with a hint when the run stops learning: a collapsed teacher
representation (low effective rank), uniform teacher targets (entropy near ``ln K``: no signal), or
a collapsed student head (every volume gets the same output).

Effective rank (Roy & Vetterli 2007) = ``exp(H(p))`` with ``p`` the normalised singular values of
the centred embedding matrix: ~1 when every volume maps to the same direction (collapse), up to
``min(n, C)`` for well-spread features. It is computed over a sliding window of recent teacher
CLS vectors because one small batch bounds the rank by its size.
"""

from __future__ import annotations

import json
import logging
import math
from collections import deque
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)


def effective_rank(embeddings: torch.Tensor) -> float:
    """``exp(entropy(s / sum(s)))`` of the singular values ``s`` of the centred ``(n, C)`` matrix."""
    x = embeddings.detach().float()
    if x.shape[0] < 2:
        return float("nan")
    x = x - x.mean(0, keepdim=True)
    s = torch.linalg.svdvals(x)
    total = s.sum()
    if total <= 0:
        return 1.0
    p = s / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


UNIFORM_HINT = ("teacher targets are nearly uniform (entropy {entropy:.3f} of max {max:.3f} nats): the student "
                "gets no signal; use a few hundred prototypes (dino.head_n_prototypes), a constant teacher_temp "
                "of 0.04, and train.centering=centering (Sinkhorn-Knopp needs prototypes <= batch rows)")
HEAD_HINT = ("student head is collapsing (mean pairwise cosine of its outputs {cosine:.3f}, spread across the "
             "batch {spread:.4f}): lower the lr (<= 5e-4 with warm-up), freeze the teacher or raise its momentum "
             "(0.996 -> 1), and use student.layerscale=1.0")


def diagnose(values: dict[str, Any], *, uniform_fraction: float, head_cosine_max: float) -> dict[str, str]:
    """The warnings one step's values call for: ``{code: one-line message with a hint}``.

    ``uniform_targets``: teacher target entropy >= ``uniform_fraction`` x ``ln K``;
    ``head_collapse``: mean pairwise cosine of the student head's outputs >= ``head_cosine_max``.
    """
    out = {}
    entropy, top = values.get("teacher_entropy"), values.get("teacher_entropy_max")
    if entropy is not None and top and entropy >= uniform_fraction * top:
        out["uniform_targets"] = UNIFORM_HINT.format(entropy=entropy, max=top)
    cosine = values.get("student_head_cosine")
    if cosine is not None and cosine >= head_cosine_max:
        out["head_collapse"] = HEAD_HINT.format(cosine=cosine, spread=values.get("student_logit_spread_batch", float("nan")))
    return out


class TrainingMonitor:
    """Collects per-step values; rank 0 writes ``metrics.jsonl`` (and TensorBoard events)."""

    def __init__(self, run_dir: Path, config: dict[str, Any], *, enabled: bool, embed_dim: int) -> None:
        mon = config["monitor"]
        self.enabled = enabled
        self.period = max(1, int(mon["log_period"]))
        self.window: deque[torch.Tensor] = deque()
        self.window_size = int(mon["rank_window"])
        self.rank_fraction = float(mon["collapse_rank_fraction"])
        self.min_steps = int(mon["collapse_min_steps"])
        self.embed_dim = embed_dim
        self.path = run_dir / "metrics.jsonl"
        self.collapse_warnings = 0
        self.uniform_fraction = float(mon.get("uniform_target_fraction", 0.98))
        self.head_cosine_max = float(mon.get("head_cosine_max", 0.95))
        self.active: set[str] = set()  # warnings in force (printed once at onset, again after clearing)
        self._writer = None
        if enabled and mon.get("tensorboard", True):
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(run_dir / "tensorboard"))
            except (ImportError, ModuleNotFoundError):
                self._writer = None

    def observe_teacher_cls(self, cls: torch.Tensor | None) -> None:
        if cls is None:
            return
        self.window.append(cls.cpu())
        while sum(t.shape[0] for t in self.window) - self.window[0].shape[0] >= self.window_size:
            self.window.popleft()

    def teacher_rank(self) -> float:
        if not self.window:
            return float("nan")
        return effective_rank(torch.cat(list(self.window))[-self.window_size :])

    def collapse_threshold(self) -> float:
        n = min(sum(t.shape[0] for t in self.window), self.window_size)
        return max(1.5, self.rank_fraction * min(n, self.embed_dim))

    def log(self, step: int, values: dict[str, Any], *, force: bool = False) -> dict[str, Any] | None:
        """Record a step; returns the written record on logging steps (else None)."""
        if not (force or step % self.period == 0):
            return None
        record = {"step": step, **values}
        rank = self.teacher_rank()
        record["teacher_cls_effective_rank"] = rank
        if not math.isnan(rank) and step >= self.min_steps and rank < self.collapse_threshold():
            record["collapse_warning"] = True
            self.collapse_warnings += 1
            if self.enabled:
                log.warning("step %d: representation may be collapsing: teacher CLS effective rank %.2f < %.2f",
                            step, rank, self.collapse_threshold())
        found = diagnose(values, uniform_fraction=self.uniform_fraction, head_cosine_max=self.head_cosine_max) \
            if step >= self.min_steps else {}
        if found:
            record["warnings"] = sorted(found)
        for code in sorted(set(found) - self.active):
            if self.enabled:
                log.warning("step %d: %s", step, found[code])
        self.active = set(found)
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record, default=float) + "\n")
            if self._writer is not None:
                for key, value in record.items():
                    if isinstance(value, int | float) and key != "step" and not isinstance(value, bool):
                        self._writer.add_scalar(key, value, step)
        return record

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """All records of a run's ``metrics.jsonl`` (a torn last line is skipped)."""
    path = Path(run_dir) / "metrics.jsonl"
    records = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records
