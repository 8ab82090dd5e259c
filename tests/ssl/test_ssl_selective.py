"""The loss-token forward (:mod:`voxelfm.ssl.selective`): same CLS and masked patch tokens as the
full forward, the same gradients, and the frozen-teacher update that does nothing."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from synthetic import single_thread  # noqa: E402

from voxelfm.models import VisionTransformer3D, ViTConfig  # noqa: E402
from voxelfm.ssl.selective import can_select, forward_selected  # noqa: E402


def _vit(**extra) -> VisionTransformer3D:
    torch.manual_seed(0)
    fields = {"patch_size": 7, "embed_dim": 24, "depth": 2, "num_heads": 2, "num_register_tokens": 2,
              "layerscale": 1.0, **extra}
    return VisionTransformer3D(ViTConfig(**fields))


def _inputs(b: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(b, 21, 21, 21, generator=g)
    masks = torch.rand(b, 27, generator=g) < 0.3
    masks[0] = False  # an unmasked crop next to masked ones
    return x, masks, masks.flatten().nonzero().flatten()


def test_kept_tokens_equal_the_full_forward() -> None:
    vit = _vit().eval()
    x, masks, idx = _inputs()
    with single_thread(), torch.no_grad():
        full = vit(x, masks=masks)
        cls, patches = forward_selected(vit, x, masks, idx)
        cls_only, none = forward_selected(vit, x, None, None)
        plain = vit(x)
    assert idx.numel() > 0
    assert torch.equal(cls, full["x_norm_clstoken"])
    assert torch.equal(patches, full["x_norm_patchtokens"].flatten(0, 1)[idx])
    assert none is None and torch.equal(cls_only, plain["x_norm_clstoken"])


def test_gradients_match_the_full_forward() -> None:
    x, masks, idx = _inputs()
    grads = []
    for selective in (False, True):
        vit = _vit().train()
        with single_thread():
            if selective:
                cls, patches = forward_selected(vit, x, masks, idx)
            else:
                out = vit(x, masks=masks)
                cls, patches = out["x_norm_clstoken"], out["x_norm_patchtokens"].flatten(0, 1)[idx]
            (cls.square().sum() + patches.sin().sum()).backward()
        grads.append({n: p.grad.clone() for n, p in vit.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name, g in grads[0].items():
        if name.startswith(("blocks.1.norm2", "blocks.1.mlp", "blocks.1.ls2", "norm.")):
            # Sums over the kept rows only: the zero-gradient rows are gone, so the sums may round
            # differently (float noise, ~1e-7 of the tensor's scale).
            assert (grads[1][name] - g).abs().max() <= 1e-6 * g.abs().max(), name
        else:
            assert torch.equal(grads[1][name], g), name  # the gradient flowing back is the same


def test_wrapped_or_path_dropping_backbones_take_the_full_forward() -> None:
    vit = _vit()
    assert can_select(vit.eval()) and can_select(vit.train())
    dropping = _vit(drop_path_rate=0.2)
    assert can_select(dropping.eval()) and not can_select(dropping.train())
    assert not can_select(torch.nn.Sequential(vit))
