"""The report model: frozen CT features → projector → image tokens in a causal LM's prompt."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from voxelfm.core.errors import ConfigError
from voxelfm.report.chat import ChatFormat, encode_example, encode_prompt, inject_image_tokens
from voxelfm.report.dataset import VisionTokens, batch_cls_mask, batch_tokens
from voxelfm.report.projector import FeatureProjector


@dataclass(frozen=True)
class DecodingConfig:
    """Decoding strategy. Paper: greedy (default), nucleus (T 0.7, top-p 0.9, top-k 50), beam (4)."""

    strategy: str = "greedy"
    max_new_tokens: int = 256
    #: An empty report is never a valid answer: end-of-sequence is suppressed until this many
    #: tokens exist (an under-trained LM otherwise often emits it first and writes nothing).
    min_new_tokens: int = 1
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 50
    num_beams: int = 4
    repetition_penalty: float = 1.0

    def __post_init__(self) -> None:
        if self.strategy not in ("greedy", "nucleus", "beam"):
            raise ConfigError(f"decoding strategy {self.strategy!r} not in greedy/nucleus/beam")
        if self.max_new_tokens < 1:
            raise ConfigError("max_new_tokens must be ≥ 1")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ConfigError("min_new_tokens must be between 0 and max_new_tokens")

    def generate_kwargs(self) -> dict[str, Any]:
        common: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "min_new_tokens": self.min_new_tokens,
                                  "repetition_penalty": self.repetition_penalty}
        if self.strategy == "greedy":
            return {**common, "do_sample": False, "num_beams": 1}
        if self.strategy == "nucleus":
            return {**common, "do_sample": True, "temperature": self.temperature,
                    "top_p": self.top_p, "top_k": self.top_k, "num_beams": 1}
        return {**common, "do_sample": False, "num_beams": self.num_beams, "early_stopping": True}


class ReportModel(nn.Module):
    """Projector + (optionally LoRA-wrapped) causal LM + tokenizer + chat format."""

    def __init__(self, lm: Any, tokenizer: Any, projector: FeatureProjector, chat: ChatFormat,
                 *, use_cls: bool = True) -> None:
        super().__init__()
        self.lm = lm
        self.tokenizer = tokenizer
        self.projector = projector
        self.chat = chat
        self.use_cls = use_cls

    def image_embeds(self, items: Sequence[VisionTokens], *, noise_std: float = 0.0,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """Projected image tokens (B, Q, D) for a batch of scans."""
        device = next(self.projector.parameters()).device
        tokens, mask, positions = batch_tokens(items, self.projector.config.hidden_dim, use_cls=self.use_cls)
        return self.projector(tokens.to(device), mask.to(device), positions.to(device),
                              batch_cls_mask(items).to(device), noise_std=noise_std, generator=generator)

    def loss(self, items: Sequence[VisionTokens], input_ids: list[list[int]],
             labels: list[list[int]], *, noise_std: float = 0.0,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean next-token cross-entropy over the assistant (report) tokens of the batch."""
        embeds = self.image_embeds(items, noise_std=noise_std, generator=generator)
        inputs, mask, target = inject_image_tokens(input_ids, labels, embeds,
                                                   self.lm.get_input_embeddings())
        return self.lm(inputs_embeds=inputs.to(self._lm_dtype()), attention_mask=mask, labels=target,
                       use_cache=False).loss

    def _lm_dtype(self) -> torch.dtype:
        return self.lm.get_input_embeddings().weight.dtype

    def encode(self, report: str) -> tuple[list[int], list[int]]:
        return encode_example(self.tokenizer, self.chat, report)

    @torch.no_grad()
    def generate(self, items: Sequence[VisionTokens], decoding: DecodingConfig | None = None,
                 *, seed: int = 0) -> list[str]:
        """Generate one report per scan (left-padded batch, prompt as in training)."""
        decoding = decoding or DecodingConfig()
        prompt = encode_prompt(self.tokenizer, self.chat)
        embeds = self.image_embeds(items)
        inputs, mask, _ = inject_image_tokens([prompt] * len(items), None, embeds,
                                              self.lm.get_input_embeddings(), pad_side="left")
        torch.manual_seed(seed)  # nucleus sampling draws from the global generator
        out = self.lm.generate(inputs_embeds=inputs.to(self._lm_dtype()), attention_mask=mask,
                               eos_token_id=self.tokenizer.eos_token_id,
                               pad_token_id=self.tokenizer.pad_token_id,
                               **decoding.generate_kwargs())
        return [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]
