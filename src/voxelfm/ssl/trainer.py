"""The pretraining loop: one process (CPU/GPU) or many under ``torchrun`` (DDP, or FSDP).

Per optimizer step: set lr / weight decay from the schedules, run ``grad_accum_steps``
micro-batches (gradients summed, loss divided by the count), clip the global gradient norm, step
AdamW, EMA-update the teacher, update the centres, log, and checkpoint (rank 0 only writes).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from voxelfm.core.device import canonical_precision, fast_bf16, resolve_device
from voxelfm.core.errors import CheckpointError, ConfigError, VoxelFMError, located
from voxelfm.ssl.checkpoint import clean_partial_checkpoints, resume_checkpoint, save_checkpoint
from voxelfm.ssl.config import check_batch_size, load_config, save_config
from voxelfm.ssl.data import build_data, micro_batches
from voxelfm.ssl.meta_arch import SSLMetaArch
from voxelfm.ssl.monitor import TrainingMonitor, read_metrics
from voxelfm.ssl.param_groups import apply_schedule, build_param_groups
from voxelfm.ssl.schedules import build_schedules, lr_scale_factor, run_length

log = logging.getLogger(__name__)
_DROP_PATH = 5  # random stream id of the per-micro-batch torch seed (drop path)


class TrainingDiverged(VoxelFMError):
    """The loss became NaN or infinite."""


# -- distributed ------------------------------------------------------------------------------------
def setup_distributed(device: torch.device) -> tuple[int, int]:
    """Join the torchrun process group if launched by torchrun; returns ``(rank, world_size)``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def finish_distributed(exit_code: int = 0) -> None:
    """End a torchrun worker cleanly (barrier, destroy the group, flush, ``os._exit``): avoids the
    gloo abort at interpreter exit seen on CPU."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(exit_code)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """Autocast dtype of ``compute_precision`` (names of :mod:`voxelfm.core.device`) for training.

    ``auto`` and ``bf16`` use bf16 where the hardware runs it natively (:func:`fast_bf16`); an
    explicit ``bf16`` on a CPU without AMX/AVX512-BF16 falls back to fp32 with a warning (emulated
    bf16 is slower than fp32). fp16 gives nothing on CPU (fp32) and is refused on CUDA.
    """
    name = canonical_precision(precision, key="compute_precision")
    if name == "fp32":
        return torch.float32
    if name in ("bf16", "auto"):
        if device.type == "cuda" and name == "bf16":
            return torch.bfloat16
        fast, why = fast_bf16(device)
        if not fast and name == "bf16":
            log.warning("compute_precision=bf16: %s; using fp32", why)
        return torch.bfloat16 if fast else torch.float32
    if device.type == "cpu":
        log.warning("compute_precision=fp16 gives no speed-up on CPU; using fp32")
        return torch.float32
    # No gradient scaler: at initialisation the head's activations (~1e-5) are below fp16's
    # smallest normal number, so fp16 training would silently lose gradients.
    raise ConfigError("compute_precision=fp16 is not supported on CUDA (no gradient scaler: small head "
                      "activations underflow); use compute_precision=bf16")


def _micro_seed(seed: int, step: int, micro: int) -> int:
    return int(np.random.SeedSequence([seed, _DROP_PATH, step, micro]).generate_state(1)[0])


def _to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


# -- the trainer ------------------------------------------------------------------------------------
class Trainer:
    """Owns the meta-model, optimizer, schedules, data and checkpoints of one run directory."""

    def __init__(self, config: dict[str, Any], run_dir: Path) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        train = config["train"]
        self.device = resolve_device(train["device"], key="train.device")
        self.rank, self.world = setup_distributed(self.device)
        self.is_main = self.rank == 0
        check_batch_size(config, self.world)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
            torch.backends.cuda.matmul.allow_tf32 = True
        self.dtype = resolve_precision(str(config["compute_precision"]), self.device)
        self.accum = int(train["grad_accum_steps"])
        self.seed = int(train["seed"])
        self.total_steps, _ = run_length(config)
        # Recorded in the resolved config (saved as RUN/config.yaml) so the applied lr is on file.
        config["optim"]["lr_scale_factor"] = lr_scale_factor(config, self.world)
        self.schedules = build_schedules(config)
        # Same seed on every rank: identical initialisation (DDP also broadcasts from rank 0).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.model = SSLMetaArch(config)
        self._load_pretrained(str(config["student"].get("pretrained_weights") or config["MODEL"].get("WEIGHTS") or ""))
        self.model.to(self.device)
        # Wrap before building the optimizer: FSDP replaces the parameters with sharded ones.
        self._wrap()
        depth = int(config["student"]["depth"])
        groups = build_param_groups(
            [(f"student.{name}.", module, name == "backbone") for name, module in self.model.student.items()],
            depth, float(config["optim"]["layerwise_decay"]), float(config["optim"]["patch_embed_lr_mult"]))
        optim = config["optim"]
        if str(optim.get("optimizer", "adamw")).lower() != "adamw":
            raise ConfigError(f"optim.optimizer={optim['optimizer']!r}: only adamw is supported")
        self.optimizer = torch.optim.AdamW(groups, lr=0.0, betas=(float(optim["adamw_beta1"]), float(optim["adamw_beta2"])))
        self.start_step = 0
        if train.get("resume", True):
            self._resume()
        self.monitor = TrainingMonitor(self.run_dir, config, enabled=self.is_main, embed_dim=int(config["student"]["embed_dim"]))

    # -- setup ----------------------------------------------------------------------------------
    def _load_pretrained(self, path: str) -> None:
        """Initialise student and teacher backbones from a model directory or a checkpoint."""
        if not path:
            return
        from voxelfm.models import backbone_state_from_checkpoint, load_model

        source = Path(path)
        if source.is_dir():
            state = load_model(source).state_dict()
        else:
            from voxelfm.models.weights import read_weights_file

            raw = read_weights_file(source)  # safetensors or weights_only; one-line CheckpointError
            state = backbone_state_from_checkpoint(raw)
        for part in (self.model.student, self.model.teacher):
            missing, unexpected = part["backbone"].load_state_dict(state, strict=False)
            if unexpected or [k for k in missing if k != "rope_embed.periods"]:
                raise CheckpointError(located(source, f"weights do not fit the architecture (missing {missing[:3]}, unexpected {unexpected[:3]})"))

    def _resume(self) -> None:
        if self.is_main:
            clean_partial_checkpoints(self.run_dir)
        found = resume_checkpoint(self.run_dir)  # the newest intact one (warns about unreadable newer ones)
        if found is None:
            return
        path, data = found
        try:
            if self._fsdp:
                from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

                set_state_dict(self.model, self.optimizer, model_state_dict=data["model"], optim_state_dict=data["optimizer"],
                               options=StateDictOptions(full_state_dict=True))
            else:
                self.model.load_state_dict(data["model"])
                self.optimizer.load_state_dict(data["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CheckpointError(located(path, f"does not match this run's configuration ({exc})")) from None
        self.start_step = int(data["step"])
        if self.is_main:
            log.info("resuming %s from step %d", self.run_dir, self.start_step)

    @property
    def _fsdp(self) -> bool:
        return self.world > 1 and self.config["train"]["distributed"] == "fsdp"

    def _wrap(self) -> None:
        if self.world <= 1:
            return
        if self.config["train"]["distributed"] == "fsdp":
            from torch.distributed.fsdp import fully_shard

            for name in list(self.model.student.keys()):
                for part in (self.model.student[name], self.model.teacher[name]):
                    if name == "backbone":
                        for block in part.blocks:
                            fully_shard(block)
                    fully_shard(part, reshard_after_forward=True)
                self.model.student_call[name] = self.model.student[name]
            return
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.device.index] if self.device.type == "cuda" else None
        for name, module in self.model.student.items():
            # Every parameter reaches the loss, iBOT on or off (mask_token through torch.where, with
            # a zero gradient), so no unused-parameter search: with it, the backbone's two forwards
            # per micro-batch (global, local crops) make DDP mark mask_token ready twice and fail.
            self.model.student_call[name] = DDP(module, device_ids=ids, find_unused_parameters=False)

    # -- one step -------------------------------------------------------------------------------
    def _sync_contexts(self, last: bool) -> contextlib.AbstractContextManager:
        stack = contextlib.ExitStack()
        if not last:
            for module in self.model.student_call.values():
                if hasattr(module, "no_sync"):
                    stack.enter_context(module.no_sync())
        return stack

    def train_step(self, step: int, micro_batches: Iterable[dict[str, Any]]) -> dict[str, Any]:
        """One optimizer step over ``grad_accum_steps`` micro-batches; returns its log values."""
        values = self.schedules.at(step)
        apply_schedule(self.optimizer, values["lr"], values["weight_decay"], values["last_layer_lr"])
        self.optimizer.zero_grad(set_to_none=True)
        self.model.train()
        sums: dict[str, float] = {}
        autocast = self.dtype != torch.float32
        for a, batch in enumerate(micro_batches):
            batch = _to_device(batch, self.device)
            if self.world > 1 and self.config["train"]["centering"] == "sinkhorn_knopp":
                n = torch.tensor([float(batch["n_masked_patches"])], device=self.device)
                dist.all_reduce(n)
                batch["n_masked_total"] = int(n.item())
            torch.manual_seed(_micro_seed(self.seed, step, int(batch["micro"])))
            with self._sync_contexts(last=a == self.accum - 1), torch.autocast(
                device_type=self.device.type, dtype=self.dtype, enabled=autocast
            ):
                loss, logs = self.model.forward_micro(batch, values["teacher_temp"])
            if not torch.isfinite(loss):
                raise TrainingDiverged(located(self.run_dir, f"loss is {float(loss)} at step {step} (micro-batch {a})"))
            (loss / self.accum).backward()
            self.monitor.observe_teacher_cls(self.model.last_teacher_cls())
            for key, value in logs.items():
                sums[key] = sums.get(key, 0.0) + float(value)
        params = [p for p in self.model.student.parameters() if p.grad is not None]
        clip = self.config["optim"].get("clip_grad")
        if clip:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, float(clip)))
        else:
            grad_norm = float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])))
        self.optimizer.step()
        self.model.update_teacher(values["momentum"])
        self.model.update_centers()
        sync = int(self.config["train"].get("teacher_sync_period") or 0)
        if self.world > 1 and not self._fsdp and sync and (step + 1) % sync == 0:
            self.model.broadcast_teacher(src=0)  # DDP replicas: rank 0's teacher is the truth
        out = {k: v / self.accum for k, v in sums.items()}
        out.update(values)
        out["grad_norm"] = grad_norm
        return out

    # -- the loop -------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        if self._fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

            model_state, optim_state = get_state_dict(
                self.model, self.optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
            return {"model": model_state, "optimizer": optim_state}
        return {"model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                "optimizer": self.optimizer.state_dict()}

    def _checkpoint(self, step: int) -> None:
        state = self._state()  # collective under FSDP: every rank participates
        if self.is_main:
            ck = self.config["checkpointing"]
            save_checkpoint(self.run_dir, step, state, max_to_keep=int(ck["max_to_keep"]), keep_every=ck.get("keep_every"))
        if self.world > 1:
            dist.barrier()

    def _stop_for_time(self, started: float) -> bool:
        limit = self.config["train"].get("max_minutes")
        if not limit:
            return False
        flag = torch.tensor([1.0 if time.monotonic() - started > float(limit) * 60 else 0.0], device=self.device)
        if self.world > 1:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)  # every rank must stop at the same step
        return bool(flag.item())

    def fit(self, stop_at_step: int | None = None) -> dict[str, Any]:
        """Train from ``start_step`` to the end of the run, the time limit or ``stop_at_step``
        (a checkpoint is written where it stops, so a later ``fit`` resumes there); returns a summary."""
        train = self.config["train"]
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(self.config, self.run_dir / "config.yaml")
            self._truncate_metrics(self.start_step)
        builder = build_data(self.config, world_size=self.world)
        loader = micro_batches(builder, start_step=self.start_step, end_step=self.total_steps, rank=self.rank,
                               world_size=self.world, accum=self.accum, num_workers=int(train["num_workers"]))
        batches = iter(loader)
        period = int(self.config["checkpointing"]["period"])
        progress = None
        if self.is_main and self.config["monitor"].get("progress", True):
            from tqdm.auto import tqdm

            progress = tqdm(total=self.total_steps, initial=self.start_step, desc="pretrain", unit="step", dynamic_ncols=True)
        started = time.monotonic()
        step, last = self.start_step, None
        samples_per_step = int(train["batch_size_per_gpu"]) * self.accum * self.world
        try:
            while step < self.total_steps:
                t0 = time.perf_counter()
                values = self.train_step(step, (next(batches) for _ in range(self.accum)))
                values["step_seconds"] = time.perf_counter() - t0
                values["volumes_per_second"] = samples_per_step / max(values["step_seconds"], 1e-9)
                step += 1
                last = self.monitor.log(step, values, force=step == self.total_steps) or last
                if progress is not None:
                    progress.update(1)
                    progress.set_postfix(loss=f"{values['total_loss']:.3f}", lr=f"{values['lr']:.2e}")
                stop = self._stop_for_time(started) or (stop_at_step is not None and step >= stop_at_step)
                if step % period == 0 or step == self.total_steps or stop:
                    self._checkpoint(step)
                if stop:
                    if self.is_main and step != stop_at_step:
                        log.warning("train.max_minutes reached: stopped at step %d of %d", step, self.total_steps)
                    break
        finally:
            if progress is not None:
                progress.close()
            self.monitor.close()
        return {"run_dir": str(self.run_dir), "start_step": self.start_step, "end_step": step,
                "total_steps": self.total_steps, "last": last, "collapse_warnings": self.monitor.collapse_warnings}

    def _truncate_metrics(self, start_step: int) -> None:
        """On resume, drop metric records of steps that will be recomputed."""
        path = self.run_dir / "metrics.jsonl"
        if not path.is_file():
            return
        import json

        from voxelfm.core.atomic import atomic_write_text

        kept = [r for r in read_metrics(self.run_dir) if int(r.get("step", 0)) <= start_step]
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


def pretrain(config: str | os.PathLike[str] | Mapping[str, Any] | None = None, overrides: Iterable[str] = (),
             out_dir: str | os.PathLike[str] | None = None) -> Path:
    """Run (or resume) DINO + iBOT + KoLeo pretraining; returns the run directory.

    ``config``: a YAML path or a dict (merged over the packaged defaults); ``overrides``:
    ``key=value`` strings; ``out_dir``: the run directory (default ``train.output_dir``). Under
    torchrun every rank calls this; only rank 0 writes.
    """
    resolved = load_config(config, list(overrides))
    run_dir = Path(out_dir) if out_dir is not None else Path(resolved["train"]["output_dir"])
    resolved["train"]["output_dir"] = str(run_dir)
    Trainer(resolved, run_dir).fit()
    return run_dir
