"""Chat formatting and image-token injection.

A training example is the LM's chat template applied to
``[system prompt, user: "<image>\\n<instruction>", assistant: <report>]``. The prompt part is
tokenised around the ``<image>`` placeholder, which becomes the sentinel id ``IMAGE_TOKEN_INDEX``
(−200, as in the original code); labels are ``IGNORE_INDEX`` (−100) everywhere except the
assistant turn, so the loss covers the report only. :func:`inject_image_tokens` later replaces
each sentinel by the projector's output embeddings and re-pads the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from voxelfm.core.errors import ConfigError, located

IMAGE_TOKEN_INDEX = -200
IGNORE_INDEX = -100
IMAGE_PLACEHOLDER = "<image>"
DEFAULT_SYSTEM_PROMPT = (
    "You are a radiology assistant specialized in interpreting chest CT scans and generating "
    "concise, accurate radiology reports."
)
DEFAULT_INSTRUCTION = "Generate a radiology report for this CT scan."


@dataclass(frozen=True)
class ChatFormat:
    """System prompt and user instruction; ``system_prompt=""`` reproduces stage 1 of the paper."""

    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    instruction: str = DEFAULT_INSTRUCTION

    def messages(self, report: str | None = None) -> list[dict[str, str]]:
        msgs = []
        if self.system_prompt:
            msgs.append({"role": "system", "content": self.system_prompt})
        msgs.append({"role": "user", "content": f"{IMAGE_PLACEHOLDER}\n{self.instruction}"})
        if report is not None:
            msgs.append({"role": "assistant", "content": report})
        return msgs


def _render(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False,
                                             add_generation_prompt=add_generation_prompt)
    # Plain fallback for base LMs without a chat template (e.g. GPT-2).
    eos = tokenizer.eos_token or ""
    parts = []
    for m in messages:
        tail = eos if m["role"] == "assistant" else ""
        parts.append(f"{m['role'].capitalize()}: {m['content']}{tail}\n")
    if add_generation_prompt:
        parts.append("Assistant: ")
    return "".join(parts)


def _encode_text(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


def encode_prompt(tokenizer: Any, chat: ChatFormat) -> list[int]:
    """Token ids of the generation prompt, with ``IMAGE_TOKEN_INDEX`` at the placeholder."""
    text = _render(tokenizer, chat.messages(), add_generation_prompt=True)
    if text.count(IMAGE_PLACEHOLDER) != 1:
        raise ConfigError(located("chat prompt", f"needs exactly one {IMAGE_PLACEHOLDER} placeholder"))
    before, after = text.split(IMAGE_PLACEHOLDER)
    return _encode_text(tokenizer, before) + [IMAGE_TOKEN_INDEX] + _encode_text(tokenizer, after)


def encode_example(tokenizer: Any, chat: ChatFormat, report: str) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` of one training conversation; labels only on the assistant turn."""
    prompt_text = _render(tokenizer, chat.messages(), add_generation_prompt=True)
    full_text = _render(tokenizer, chat.messages(report), add_generation_prompt=False)
    if full_text.startswith(prompt_text):
        answer = full_text[len(prompt_text):]
    else:  # templates that rewrite earlier turns: fall back to report + end-of-turn token
        answer = report + (tokenizer.eos_token or "")
    prompt_ids = encode_prompt(tokenizer, chat)
    answer_ids = _encode_text(tokenizer, answer)
    if not answer_ids:
        raise ConfigError(located("report", "empty report text cannot be a training target"))
    return prompt_ids + answer_ids, [IGNORE_INDEX] * len(prompt_ids) + answer_ids


def inject_image_tokens(
    input_ids: list[list[int]],
    labels: list[list[int]] | None,
    image_embeds: torch.Tensor,
    embed_tokens: torch.nn.Module,
    *,
    pad_side: str = "right",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Splice ``image_embeds`` (B, Q, D) at each sequence's ``IMAGE_TOKEN_INDEX``.

    Returns ``inputs_embeds`` (B, L, D), ``attention_mask`` (B, L) and ``labels`` (B, L) with
    ``IGNORE_INDEX`` on image and padding positions (``None`` when ``labels`` is None). Use
    ``pad_side="left"`` for batched generation.
    """
    if len(input_ids) != image_embeds.shape[0]:
        raise ConfigError(f"{len(input_ids)} sequences but {image_embeds.shape[0]} images")
    device = image_embeds.device
    seqs: list[torch.Tensor] = []
    seq_labels: list[torch.Tensor] = []
    for b, ids in enumerate(input_ids):
        positions = [i for i, t in enumerate(ids) if t == IMAGE_TOKEN_INDEX]
        if len(positions) != 1:
            raise ConfigError(located(f"sequence {b}", f"has {len(positions)} image placeholders, needs 1"))
        p = positions[0]
        pre = torch.tensor(ids[:p], dtype=torch.long, device=device)
        post = torch.tensor(ids[p + 1:], dtype=torch.long, device=device)
        img = image_embeds[b]
        seqs.append(torch.cat([embed_tokens(pre).to(img.dtype), img,
                               embed_tokens(post).to(img.dtype)], dim=0))
        if labels is not None:
            lab = labels[b]
            seq_labels.append(torch.tensor(
                lab[:p] + [IGNORE_INDEX] * img.shape[0] + lab[p + 1:], dtype=torch.long, device=device))
    length = max(s.shape[0] for s in seqs)
    dim = seqs[0].shape[1]
    embeds = image_embeds.new_zeros(len(seqs), length, dim)
    mask = torch.zeros(len(seqs), length, dtype=torch.long, device=device)
    out_labels = (torch.full((len(seqs), length), IGNORE_INDEX, dtype=torch.long, device=device)
                  if labels is not None else None)
    for b, seq in enumerate(seqs):
        n = seq.shape[0]
        sl = slice(0, n) if pad_side == "right" else slice(length - n, length)
        embeds[b, sl] = seq
        mask[b, sl] = 1
        if out_labels is not None:
            out_labels[b, sl] = seq_labels[b]
    return embeds, mask, out_labels
