"""Student/teacher meta-architecture: forward of one micro-batch, the losses, and the EMA teacher
(docs/original.md §2.1-2.2)."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from voxelfm.core.errors import ConfigError
from voxelfm.models import DINOHead, VisionTransformer3D, ViTConfig
from voxelfm.ssl.config import ARCH_KEYS
from voxelfm.ssl.losses import DINOLoss, IBOTPatchLoss, KoLeoLoss
from voxelfm.ssl.selective import can_select, forward_selected


def vit_config(config: Mapping[str, Any], *, teacher: bool = False) -> ViTConfig:
    """The backbone architecture of a pretraining config (the teacher has no drop path)."""
    student = config["student"]
    if not student.get("drop_path_uniform", True):
        raise ConfigError("student.drop_path_uniform=false (linearly increasing drop path) is not supported")
    fields = {k: student[k] for k in ARCH_KEYS}
    fields["drop_path_rate"] = 0.0 if teacher else float(student["drop_path_rate"])
    fields["mlp_ratio"] = float(fields["mlp_ratio"])
    return ViTConfig(**fields)


def _head(config: Mapping[str, Any], section: str, in_dim: int) -> DINOHead:
    s = config[section]
    return DINOHead(in_dim, out_dim=int(s["head_n_prototypes"]), hidden_dim=int(s["head_hidden_dim"]),
                    bottleneck_dim=int(s["head_bottleneck_dim"]), nlayers=int(s["head_nlayers"]))


def _cls_and_masked(backbone: nn.Module, x: torch.Tensor, masks: torch.Tensor | None,
                    mask_indices: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The normed CLS tokens and the normed patch tokens at ``mask_indices`` (None when not asked):
    the last block computed on those rows only where the backbone allows it (:mod:`.selective`)."""
    if can_select(backbone):
        return forward_selected(backbone, x, masks, mask_indices)
    out = backbone(x, masks=masks)
    patches = out["x_norm_patchtokens"].flatten(0, 1)[mask_indices] if mask_indices is not None else None
    return out["x_norm_clstoken"], patches


@torch.no_grad()
def head_diagnostics(logits: torch.Tensor) -> dict[str, float]:
    """Collapse signs of a head's output ``(n, K)``: ``student_logit_spread_batch`` (std across the
    batch, averaged over prototypes), ``student_logit_spread_prototypes`` (std across prototypes,
    averaged over rows) and ``student_head_cosine`` (mean pairwise cosine between rows). A head
    that gives every volume the same output has a batch spread near 0 and a cosine near 1."""
    x = logits.float()
    if x.shape[0] < 2:
        return {}
    unit = torch.nn.functional.normalize(x, dim=-1)
    n = unit.shape[0]
    cosine = (unit @ unit.T).sum() - n  # off-diagonal sum
    return {"student_logit_spread_batch": float(x.std(0).mean()),
            "student_logit_spread_prototypes": float(x.std(1).mean()),
            "student_head_cosine": float(cosine / (n * (n - 1)))}


class SSLMetaArch(nn.Module):
    """Student and EMA teacher (backbone + DINO head [+ separate iBOT head]) and the three losses."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__()
        self.config = config
        backbone = VisionTransformer3D(vit_config(config))
        student = {"backbone": backbone, "dino_head": _head(config, "dino", backbone.embed_dim)}
        self.ibot_weight = float(config["ibot"]["loss_weight"])
        self.separate_ibot_head = bool(config["ibot"]["separate_head"]) and self.ibot_weight > 0
        if self.separate_ibot_head:
            student["ibot_head"] = _head(config, "ibot", backbone.embed_dim)
        self.student = nn.ModuleDict(student)
        self.teacher = copy.deepcopy(self.student)
        # The teacher never drops paths; its weights equal the student's at initialisation.
        for block in self.teacher["backbone"].blocks:
            for attr in ("drop_path_rate", "sample_drop_ratio"):
                if hasattr(block, attr):
                    setattr(block, attr, 0.0)
        self.teacher["backbone"].config = vit_config(config, teacher=True)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.teacher.eval()
        self.dino_weight = float(config["dino"]["loss_weight"])
        self.koleo_weight = float(config["dino"]["koleo_loss_weight"])
        self.dino_loss = DINOLoss(int(config["dino"]["head_n_prototypes"]))
        ibot_k = int(config["ibot" if self.separate_ibot_head else "dino"]["head_n_prototypes"])
        self.ibot_loss = IBOTPatchLoss(ibot_k)
        self.koleo_loss = KoLeoLoss()
        self.centering = str(config["train"]["centering"])
        # "cross" (the original): crop 1's student view is matched to crop 2's teacher view;
        # "same": each view to the teacher's output on that same view (distilling a teacher,
        # e.g. a frozen random one, without an invariance task).
        self.teacher_view = str(config["dino"].get("teacher_view", "cross"))
        if self.teacher_view not in ("cross", "same"):
            raise ConfigError(f"dino.teacher_view must be cross|same, got {self.teacher_view!r}")
        # Wrapped (DDP/FSDP) student modules used for the forward; plain dict so the state dict
        # keeps the unwrapped names.
        self.student_call: dict[str, nn.Module] = dict(self.student.items())

    def train(self, mode: bool = True) -> SSLMetaArch:
        super().train(mode)
        self.teacher.eval()
        return self

    @torch.no_grad()
    def _teacher(self, batch: Mapping[str, Any], teacher_temp: float) -> dict[str, Any]:
        n_masked = int(batch["n_masked_patches"])
        use_ibot = self.ibot_weight > 0 and n_masked > 0
        cls, patches = _cls_and_masked(self.teacher["backbone"], batch["global_crops"], None,
                                       batch["mask_indices"] if use_ibot else None)
        a, b = cls.chunk(2)
        swapped = torch.cat((b, a)) if self.teacher_view == "cross" else cls
        dino_logits = self.teacher["dino_head"](swapped)
        dino_targets = self.dino_loss.teacher_targets(dino_logits, teacher_temp, self.centering)
        result = {"cls": cls, "dino_targets": dino_targets.chunk(2)}
        if use_ibot:
            head = self.teacher["ibot_head" if self.separate_ibot_head else "dino_head"]
            result["ibot_targets"] = self.ibot_loss.teacher_targets(
                head(patches), teacher_temp, self.centering, n_masked_total=batch.get("n_masked_total"))
        return result

    def forward_micro(self, batch: Mapping[str, Any], teacher_temp: float) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss of one micro-batch (not yet divided by the accumulation count) and its log values."""
        teacher = self._teacher(batch, teacher_temp)
        backbone = self.student_call["backbone"]
        dino_head = self.student_call["dino_head"]
        n_global = 2
        n_local = int(batch["n_local_crops"])
        n_masked = int(batch["n_masked_patches"])
        use_ibot = self.ibot_weight > 0 and n_masked > 0
        s_global_cls, masked_patches = _cls_and_masked(backbone, batch["global_crops"], batch["masks"],
                                                       batch["mask_indices"] if use_ibot else None)
        head_inputs = [s_global_cls]
        if n_local:
            s_local_cls, _ = _cls_and_masked(backbone, batch["local_crops"], None, None)
            head_inputs.append(s_local_cls)
        if use_ibot and not self.separate_ibot_head:
            head_inputs.append(masked_patches)
        # One head call for all inputs (as the original) keeps DDP's single reduction per step.
        head_out = dino_head(torch.cat(head_inputs))
        n_g = s_global_cls.shape[0]
        s_global_logits = head_out[:n_g]
        n_l = s_local_cls.shape[0] if n_local else 0
        s_local_logits = head_out[n_g : n_g + n_l]
        n_terms = n_global * n_local + n_global * (n_global - 1)
        logs: dict[str, float] = {}
        total = s_global_cls.new_zeros((), dtype=torch.float32)
        if self.dino_weight > 0:
            local = (self.dino_loss(list(s_local_logits.chunk(n_local)), list(teacher["dino_targets"])) / n_terms
                     if n_local else total.new_zeros(()))
            # Global term: the 2B student globals vs the swapped teacher globals, x2 (= two pairs).
            glob = self.dino_loss([s_global_logits], [torch.cat(teacher["dino_targets"])]) * 2 / n_terms
            total = total + self.dino_weight * (local + glob)
            logs["dino_local_crops_loss"] = float(local.detach())
            logs["dino_global_crops_loss"] = float(glob.detach())
        if self.koleo_weight > 0:
            koleo = sum(self.koleo_loss(v) for v in s_global_cls.chunk(n_global))
            total = total + self.koleo_weight * koleo
            logs["koleo_loss"] = float(self.koleo_weight * koleo.detach()) / n_global
        if use_ibot:
            if self.separate_ibot_head:
                s_masked_logits = self.student_call["ibot_head"](masked_patches)
            else:
                s_masked_logits = head_out[n_g + n_l :]
            ibot = self.ibot_loss(s_masked_logits, teacher["ibot_targets"], batch["masks_weight"], n_g)
            total = total + self.ibot_weight * ibot
            logs["ibot_loss"] = float(ibot.detach())
        logs["total_loss"] = float(total.detach())
        targets = torch.cat(teacher["dino_targets"])
        entropy = -(targets * torch.log(targets.clamp_min(1e-12))).sum(-1).mean()
        logs["teacher_entropy"] = float(entropy)
        logs["teacher_entropy_max"] = math.log(targets.shape[-1])
        logs["teacher_prototypes_used"] = int(targets.argmax(-1).unique().numel())
        logs.update(head_diagnostics(s_global_logits.detach()))
        self._last_teacher_cls = teacher["cls"].detach().float()
        return total, logs

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """EMA ``teacher <- m teacher + (1 - m) student`` over every student parameter."""
        t_params, s_params = [], []
        for part in (*self.teacher.values(), *self.student.values()):
            # FSDP2 leaves a no-grad forward's parameters gathered; shard them before pairing.
            if hasattr(part, "reshard"):
                part.reshard()
        if momentum == 1.0:
            # A frozen teacher (cpu_small): m t + 0 s is t exactly; skip two passes over the weights.
            return
        for name, module in self.student.items():
            for t, s in zip(self.teacher[name].parameters(), module.parameters(), strict=True):
                t_params.append(t.to_local() if hasattr(t, "to_local") else t)
                s_params.append((s.to_local() if hasattr(s, "to_local") else s).detach())
        torch._foreach_mul_(t_params, momentum)
        torch._foreach_add_(t_params, s_params, alpha=1.0 - momentum)

    def _replicated_teacher_state(self) -> list[torch.Tensor]:
        """Teacher parameters and the loss centres: what every DDP rank must hold identically."""
        return [*self.teacher.parameters(), *self.dino_loss.buffers(), *self.ibot_loss.buffers()]

    @torch.no_grad()
    def broadcast_teacher(self, src: int = 0) -> None:
        """Copy rank ``src``'s teacher and centres to every rank (DDP replicas; not for FSDP shards).

        Ranks compute the same EMA update, but nothing guarantees bit-identical results (kernels,
        a resumed rank); the fork broadcasts after each update, so drift cannot accumulate."""
        import torch.distributed as dist

        for tensor in self._replicated_teacher_state():
            dist.broadcast(tensor.data, src=src)

    @torch.no_grad()
    def teacher_checksum(self) -> float:
        """A float64 sum over the teacher's replicated state (to compare ranks)."""
        return float(sum(t.detach().double().sum() for t in self._replicated_teacher_state()))

    @torch.no_grad()
    def update_centers(self) -> None:
        """Apply this step's centre updates (no-op with Sinkhorn-Knopp)."""
        self.dino_loss.targets.update()
        self.ibot_loss.targets.update()

    def last_teacher_cls(self) -> torch.Tensor | None:
        return getattr(self, "_last_teacher_cls", None)
