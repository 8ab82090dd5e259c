"""Backbone API: output keys and shapes, token order, masks, presets, state-dict layout, training options."""

from __future__ import annotations

import pytest
import torch
from vit_helpers import SMALL, perturb_, smooth_volume

from voxelfm.core.errors import ConfigError, InputValidationError
from voxelfm.models import PRESETS, VisionTransformer3D, ViTConfig, build_model


def test_output_dict_keys_and_shapes() -> None:
    model = build_model(SMALL, seed=0).eval()
    x = smooth_volume((8, 12, 17), batch=2)  # 17 → 4 patches (conv floor drops the remainder)
    out = model(x)
    assert set(out) == {"x_norm_clstoken", "x_norm_regtokens", "x_norm_patchtokens", "x_prenorm", "masks"}
    assert model.grid_shape(8, 12, 17) == (2, 3, 4)
    assert out["x_norm_clstoken"].shape == (2, 48)
    assert out["x_norm_regtokens"].shape == (2, 2, 48)
    assert out["x_norm_patchtokens"].shape == (2, 24, 48)
    assert out["x_prenorm"].shape == (2, 1 + 2 + 24, 48)
    assert out["masks"] is None
    feats = model.forward_features(x)
    assert feats["patch"].shape == (2, 2, 3, 4, 48) and feats["grid"] == (2, 3, 4)
    torch.testing.assert_close(feats["patch"].reshape(2, 24, 48), out["x_norm_patchtokens"])


def test_patch_tokens_follow_zyx_row_major_order() -> None:
    """Changing only the voxels of patch (z=1, y=0, x=2) changes only token 1·(3·4) + 0·4 + 2 = 14
    before the blocks (the pre-block embedding)."""
    model = build_model(SMALL, seed=0)
    x = smooth_volume((8, 12, 16))
    y = x.clone()
    y[:, 4:8, 0:4, 8:12] += 5.0
    with torch.no_grad():
        a, _ = model.prepare_tokens(x, None)
        b, _ = model.prepare_tokens(y, None)
    changed = ((a - b).abs().amax(dim=-1) > 0)[0].nonzero().flatten().tolist()
    assert changed == [1 + SMALL.num_register_tokens + 14]


def test_masked_patches_become_the_mask_token() -> None:
    model = perturb_(build_model(SMALL, seed=0))
    x = smooth_volume((8, 8, 8))
    masks = torch.zeros(1, 8, dtype=torch.bool)
    masks[0, [1, 5]] = True
    with torch.no_grad():
        tokens, _ = model.prepare_tokens(x, masks)
    ns = 1 + SMALL.num_register_tokens
    torch.testing.assert_close(tokens[0, ns + 1], model.mask_token[0])
    torch.testing.assert_close(tokens[0, ns + 5], model.mask_token[0])
    assert model(x, masks)["masks"] is masks
    with pytest.raises(InputValidationError):
        model(x, torch.zeros(1, 7, dtype=torch.bool))


def test_bad_inputs_raise_clear_errors() -> None:
    model = build_model(SMALL, seed=0)
    with pytest.raises(InputValidationError, match=r"\(B, D, H, W\)"):
        model(torch.zeros(1, 1, 8, 8, 8))
    with pytest.raises(InputValidationError, match="smaller than one patch"):
        model(torch.zeros(1, 2, 8, 8))


def test_presets_satisfy_rope_constraint_and_base_is_the_original() -> None:
    for cfg in PRESETS.values():
        assert cfg.embed_dim % (6 * cfg.num_heads) == 0
    base = PRESETS["vit-base"]
    assert (base.embed_dim, base.depth, base.num_heads, base.patch_size, base.num_register_tokens) == (864, 12, 12, 14, 4)
    with pytest.raises(ConfigError, match="divisible by 6"):
        ViTConfig(embed_dim=768, num_heads=12)
    with pytest.raises(ConfigError, match="unknown model preset"):
        build_model("vit-huge")


def test_vit_base_state_dict_layout_matches_reference() -> None:
    with torch.device("meta"):
        model = VisionTransformer3D(PRESETS["vit-base"])
    state = model.state_dict()
    assert len(state) == 176
    assert sum(p.numel() for p in model.parameters()) == 110_029_536
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    assert shapes["cls_token"] == (1, 1, 864)
    assert shapes["register_tokens"] == (1, 4, 864)
    assert shapes["mask_token"] == (1, 864)
    assert shapes["patch_embed.proj.weight"] == (864, 1, 14, 14, 14)
    assert shapes["rope_embed.periods"] == (12,)
    assert shapes["blocks.11.attn.qkv.weight"] == (2592, 864)
    assert shapes["blocks.0.mlp.fc1.weight"] == (3456, 864)
    assert shapes["blocks.0.ls2.gamma"] == (864,)
    assert shapes["norm.bias"] == (864,)


def test_seeded_build_is_deterministic_and_does_not_touch_global_rng() -> None:
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = build_model(SMALL, seed=5)
    after = torch.rand(1)
    b = build_model(SMALL, seed=5)
    assert torch.equal(before, after)
    assert a.model_id == b.model_id
    assert a.model_id != build_model(SMALL, seed=6).model_id


def test_init_follows_reference() -> None:
    model = build_model(PRESETS["vit-tiny"], seed=0).requires_grad_(False)
    assert float(model.cls_token.abs().max()) < 1e-4
    assert float(model.mask_token.abs().max()) == 0.0
    assert float(model.blocks[0].ls1.gamma.mean()) == pytest.approx(1e-5)
    assert float(model.blocks[0].attn.qkv.weight.std()) == pytest.approx(0.02, rel=0.1)
    assert float(model.blocks[0].attn.qkv.bias.abs().max()) == 0.0


def test_drop_path_only_in_training_and_checkpointing_keeps_gradients() -> None:
    cfg = SMALL.replace(drop_path_rate=0.5)
    model = perturb_(build_model(cfg, seed=0))
    x = smooth_volume((8, 8, 8), batch=4)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x)["x_prenorm"], model(x)["x_prenorm"])
    model.train()
    torch.manual_seed(0)
    a = model(x)["x_prenorm"]
    torch.manual_seed(1)
    b = model(x)["x_prenorm"]
    assert not torch.allclose(a, b)

    plain = perturb_(build_model(SMALL, seed=0)).train()
    ckpt = perturb_(build_model(SMALL, seed=0)).train()
    ckpt.set_grad_checkpointing(True)
    for net in (plain, ckpt):
        net(x)["x_norm_clstoken"].pow(2).sum().backward()
    for (name, p1), (_, p2) in zip(plain.named_parameters(), ckpt.named_parameters(), strict=True):
        if p1.grad is not None:
            torch.testing.assert_close(p1.grad, p2.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_swiglu_and_no_layerscale_variants_run() -> None:
    for cfg in (SMALL.replace(ffn_layer="swiglu"), SMALL.replace(layerscale=None)):
        model = build_model(cfg, seed=0)
        out = model(smooth_volume((8, 8, 8)))
        assert out["x_norm_clstoken"].shape == (1, 48)
    assert "blocks.0.mlp.w12.weight" in build_model(SMALL.replace(ffn_layer="swiglu")).state_dict()
    assert "blocks.0.ls1.gamma" not in build_model(SMALL.replace(layerscale=None)).state_dict()


def test_bf16_autocast_is_close_to_fp32() -> None:
    model = perturb_(build_model(SMALL, seed=0)).eval()
    x = smooth_volume((8, 8, 8))
    fp32 = model.forward_features(x)
    bf16 = model.forward_features(x, autocast_dtype=torch.bfloat16)
    assert bf16["cls"].dtype == torch.float32
    assert float((fp32["patch"] - bf16["patch"]).abs().mean()) < 0.1


def test_large_grid_inference_runs_the_ffn_in_slices_with_the_same_output(monkeypatch: pytest.MonkeyPatch) -> None:
    """Above FFN_CHUNK_TOKENS tokens, no-grad inference slices the FFN branch (memory bound at
    25,000 patches); the features equal the unsliced forward's."""
    from voxelfm.models import layers

    model = perturb_(build_model(SMALL, seed=0)).eval()
    x = smooth_volume((8, 12, 16))  # 2 x 3 x 4 = 24 patches + CLS + registers
    with torch.no_grad():
        whole = model(x)["x_norm_patchtokens"]
        calls: list[int] = []
        original = layers._chunked_residual
        monkeypatch.setattr(layers, "_chunked_residual",
                            lambda t, branch, chunk: calls.append(chunk) or original(t, branch, chunk))
        monkeypatch.setattr(layers, "FFN_CHUNK_TOKENS", 7)
        sliced = model(x)["x_norm_patchtokens"]
    assert calls and set(calls) == {7}
    torch.testing.assert_close(sliced, whole, rtol=1e-5, atol=1e-6)
    with torch.enable_grad():  # training path untouched: gradients flow through the unsliced FFN
        calls.clear()
        model(x)["x_norm_clstoken"].sum().backward()
    assert not calls
