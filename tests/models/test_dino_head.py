"""DINO head (docs/original.md §2.1): layout, weight norm, normalised bottleneck."""

from __future__ import annotations

import torch

from voxelfm.models import DINOHead


def test_keys_shapes_and_weight_norm_magnitude() -> None:
    head = DINOHead(48, out_dim=100, hidden_dim=32, bottleneck_dim=16, nlayers=3)
    shapes = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    assert shapes == {
        "mlp.0.weight": (32, 48), "mlp.0.bias": (32,), "mlp.2.weight": (32, 32), "mlp.2.bias": (32,),
        "mlp.4.weight": (16, 32), "mlp.4.bias": (16,),
        "last_layer.parametrizations.weight.original0": (100, 1),
        "last_layer.parametrizations.weight.original1": (100, 16),
    }
    assert torch.all(head.state_dict()["last_layer.parametrizations.weight.original0"] == 1.0)


def test_output_is_prototype_cosines() -> None:
    head = DINOHead(48, out_dim=10, hidden_dim=32, bottleneck_dim=16)
    x = torch.randn(5, 48)
    with torch.no_grad():
        out = head(x)
        z = torch.nn.functional.normalize(head.mlp(x), dim=-1)
    assert out.shape == (5, 10)
    # g = 1 and the bottleneck is unit-norm, so every logit is a cosine in [-1, 1].
    assert float(out.abs().max()) <= 1.0 + 1e-5
    v = head.last_layer.parametrizations.weight.original1
    torch.testing.assert_close(out, z @ torch.nn.functional.normalize(v.detach(), dim=-1).T)


def test_single_layer_variant() -> None:
    head = DINOHead(8, out_dim=4, bottleneck_dim=6, nlayers=1)
    assert "mlp.weight" in head.state_dict()
    assert head(torch.randn(2, 8)).shape == (2, 4)
