"""CPU bf16 inference (``forward_features(autocast_dtype=bfloat16)``): the cached linear-weight casts
are exactly autocast's, refresh when the weights change, and the result stays close to fp32."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from vit_helpers import SMALL, perturb_

from voxelfm.models import build_model


def _model() -> torch.nn.Module:
    return perturb_(build_model(SMALL, seed=0)).eval()


def _x(seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 12, 16, 12, generator=torch.Generator().manual_seed(seed))


def test_cached_casts_are_autocasts_casts_and_are_reused() -> None:
    model = _model()
    a = model.forward_features(_x(), autocast_dtype=torch.bfloat16)
    cache = model._cast_cache[1]
    b = model.forward_features(_x(), autocast_dtype=torch.bfloat16)
    assert model._cast_cache[1] is cache  # no re-cast on the second forward
    assert torch.equal(a["cls"], b["cls"]) and torch.equal(a["patch"], b["patch"])
    linear = {n: p for n, p in model.named_parameters() if n.startswith("blocks") and ("attn" in n or "mlp" in n)}
    assert set(cache) == set(linear)
    assert all(torch.equal(cache[n], p.detach().to(torch.bfloat16)) for n, p in linear.items())


def test_cache_follows_weight_changes() -> None:
    model = _model()
    model.forward_features(_x(), autocast_dtype=torch.bfloat16)
    perturb_(model, seed=5)  # in place: every parameter's version changes
    got = model.forward_features(_x(), autocast_dtype=torch.bfloat16)
    fresh = build_model(SMALL, seed=0).eval()
    fresh.load_state_dict(model.state_dict())
    want = fresh.forward_features(_x(), autocast_dtype=torch.bfloat16)
    assert torch.equal(got["cls"], want["cls"]) and torch.equal(got["patch"], want["patch"])


def test_bf16_stays_close_to_fp32_and_fp32_is_untouched() -> None:
    model = _model()
    ref = model.forward_features(_x(1))
    low = model.forward_features(_x(1), autocast_dtype=torch.bfloat16)
    assert float(F.cosine_similarity(ref["cls"], low["cls"])) > 0.999
    again = model.forward_features(_x(1))  # fp32 after a bf16 forward: the model's own weights, unchanged
    assert torch.equal(ref["cls"], again["cls"]) and torch.equal(ref["patch"], again["patch"])
    assert all(p.dtype == torch.float32 for p in model.parameters())
