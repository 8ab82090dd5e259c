"""DINO (CLS), iBOT (masked patches) and KoLeo losses, with centering or Sinkhorn-Knopp (docs/original.md §2.2).

Centering follows the original: the centre is an EMA (momentum 0.9) of the teacher outputs'
batch mean, accumulated over the micro-batches of one optimizer step and all ranks, and updated
once per optimizer step (so a step's targets use the previous step's centre); the very first
update copies the mean. Sinkhorn-Knopp (3 iterations, across ranks) is the alternative that
needs no centre and resists collapse with small batches.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_reduce(tensor: torch.Tensor, op: dist.ReduceOp.RedOpType = dist.ReduceOp.SUM) -> torch.Tensor:
    if _distributed():
        dist.all_reduce(tensor, op=op)
    return tensor


@torch.no_grad()
def sinkhorn_knopp(teacher_output: torch.Tensor, teacher_temp: float, n_iterations: int = 3,
                   n_samples: int | None = None) -> torch.Tensor:
    """Balanced teacher targets ``(n, K)``: rows sum to 1 and prototypes are used equally across
    the global batch. ``n_samples`` = rows over all ranks (default: local rows x world size)."""
    logits = teacher_output.float() / teacher_temp
    # Subtracting the global max changes nothing after normalisation but prevents exp overflow.
    shift = _all_reduce(logits.max().reshape(1).clone(), dist.ReduceOp.MAX)
    q = torch.exp(logits - shift).t()  # (K, n)
    world = dist.get_world_size() if _distributed() else 1
    n_total = float(n_samples if n_samples is not None else q.shape[1] * world)
    k = float(q.shape[0])
    q /= _all_reduce(q.sum().reshape(1).clone())
    for _ in range(n_iterations):
        q /= _all_reduce(q.sum(dim=1, keepdim=True))
        q /= k
        q /= q.sum(dim=0, keepdim=True)
        q /= n_total
    q *= n_total
    return q.t()


class CenteredTargets(nn.Module):
    """The teacher centre of one loss and its once-per-step EMA update."""

    def __init__(self, out_dim: int, momentum: float = 0.9) -> None:
        super().__init__()
        self.momentum = momentum
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))
        self._sum: torch.Tensor | None = None
        self._count = 0

    @torch.no_grad()
    def softmax(self, teacher_output: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        """``softmax((t - center) / temp)`` in fp32."""
        return F.softmax((teacher_output.float() - self.center) / teacher_temp, dim=-1)

    @torch.no_grad()
    def accumulate(self, batch_mean: torch.Tensor, weight: int = 1) -> None:
        """Record one micro-batch's mean (weighted by its number of rows)."""
        contribution = batch_mean.detach().float().reshape(1, -1) * weight
        self._sum = contribution if self._sum is None else self._sum + contribution
        self._count += weight

    @torch.no_grad()
    def update(self) -> None:
        """Apply the step's mean (all ranks): first update copies it, later ones are EMA."""
        if self._sum is None:
            return
        payload = torch.cat([self._sum.reshape(-1), torch.tensor([float(self._count)], device=self._sum.device)])
        payload = _all_reduce(payload)
        mean = (payload[:-1] / payload[-1].clamp(min=1)).reshape(1, -1)
        if bool(self.initialised):
            self.center.mul_(self.momentum).add_(mean, alpha=1.0 - self.momentum)
        else:
            self.center.copy_(mean)
            self.initialised.fill_(True)
        self._sum, self._count = None, 0


def cross_entropy_terms(student_chunks: list[torch.Tensor], teacher_chunks: list[torch.Tensor],
                        student_temp: float) -> torch.Tensor:
    """``sum over (student chunk, teacher chunk) pairs of mean_rows CE(teacher, softmax(s/T))``."""
    total = student_chunks[0].new_zeros((), dtype=torch.float32)
    for s in student_chunks:
        log_p = F.log_softmax(s.float() / student_temp, dim=-1)
        for t in teacher_chunks:
            total = total - (t * log_p).sum(dim=-1).mean()
    return total


class DINOLoss(nn.Module):
    """DINO CLS loss: CE between teacher targets and the student softmax (temperature 0.1)."""

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9) -> None:
        super().__init__()
        self.student_temp = student_temp
        self.targets = CenteredTargets(out_dim, center_momentum)

    def teacher_targets(self, teacher_output: torch.Tensor, teacher_temp: float, centering: str) -> torch.Tensor:
        """Targets for ``teacher_output`` (n, K); with centering, also records the batch mean."""
        if centering == "sinkhorn_knopp":
            return sinkhorn_knopp(teacher_output, teacher_temp)
        targets = self.targets.softmax(teacher_output, teacher_temp)
        self.targets.accumulate(teacher_output.float().mean(0), weight=teacher_output.shape[0])
        return targets

    def forward(self, student_chunks: list[torch.Tensor], teacher_chunks: list[torch.Tensor]) -> torch.Tensor:
        return cross_entropy_terms(student_chunks, teacher_chunks, self.student_temp)


class IBOTPatchLoss(nn.Module):
    """iBOT loss on masked patches: per-patch CE weighted by 1/#masked of its crop, summed and
    divided by the number of global crops (masked or not)."""

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9) -> None:
        super().__init__()
        self.student_temp = student_temp
        self.targets = CenteredTargets(out_dim, center_momentum)

    def teacher_targets(self, masked_teacher_output: torch.Tensor, teacher_temp: float, centering: str,
                        n_masked_total: int | None = None) -> torch.Tensor:
        if centering == "sinkhorn_knopp":
            return sinkhorn_knopp(masked_teacher_output, teacher_temp, n_samples=n_masked_total)
        targets = self.targets.softmax(masked_teacher_output, teacher_temp)
        # The original centre is the EMA of per-micro-batch means over masked patches.
        self.targets.accumulate(masked_teacher_output.float().mean(0), weight=1)
        return targets

    def forward(self, student_masked: torch.Tensor, teacher_targets: torch.Tensor, masks_weight: torch.Tensor,
                n_images: int) -> torch.Tensor:
        log_p = F.log_softmax(student_masked.float() / self.student_temp, dim=-1)
        per_patch = (teacher_targets * log_p).sum(dim=-1)
        return -(per_patch * masks_weight).sum() / max(n_images, 1)


class KoLeoLoss(nn.Module):
    """Kozachenko-Leonenko entropy estimator: ``-mean log(||x - nn(x)|| + eps)`` on L2-normalised
    vectors, nearest neighbour by maximal dot product (self excluded), in fp32."""

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] < 2:
            return x.new_zeros((), dtype=torch.float32)
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = F.normalize(x.float(), p=2, dim=-1, eps=self.eps)
            with torch.no_grad():
                dots = x @ x.t()
                dots.fill_diagonal_(-2.0)
                nearest = dots.argmax(dim=1)
            distances = torch.linalg.vector_norm(x - x[nearest], dim=-1)
            return -torch.log(distances + self.eps).mean()
