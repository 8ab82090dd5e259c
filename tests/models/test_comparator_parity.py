"""Each comparator encoder against an independent statement of its original (max abs diff ≤ 1e-4).

Seeded weights are written in the ORIGINAL checkpoint layout (prefixes, text/decoder keys, bf16
for M3D), converted with ``voxelfm convert-checkpoint`` (``--from`` detected from the keys) with
reduced hyper-parameters through ``--set``, loaded with ``load_model`` and run on a native input.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from original_comparators import (
    ctclip_forward,
    m3d_forward,
    merlin_forward,
    radfm_forward,
    seeded_state,
)
from typer.testing import CliRunner

from voxelfm.cli.main import app
from voxelfm.models import load_model
from voxelfm.models.backbones import backbone_class

TOL = 1e-4

M3D_SET = {"img_size": "[8,32,48]", "patch_size": "[4,16,16]", "hidden_size": "48", "mlp_dim": "96",
           "num_layers": "2", "num_heads": "4"}
RADFM_SET = {"image_size": "64", "image_patch_size": "16", "frames": "32", "dim": "48", "depth": "2", "heads": "3",
             "dim_head": "8", "mlp_dim": "64"}
MERLIN_SET = {"layers": "[2,1,2,1]", "width": "8", "class_nb": "5", "contrastive_dim": "6"}
CTCLIP_SET = {"dim": "32", "codebook_size": "64", "image_size": "48", "patch_size": "12", "temporal_patch_size": "4",
              "frames": "12", "spatial_depth": "2", "temporal_depth": "2", "dim_head": "8", "heads": "2",
              "dim_latent": "10"}


def _shapes(name: str, sets: dict[str, str]) -> dict[str, tuple[int, ...]]:
    cls = backbone_class(name)
    with torch.device("meta"):
        net = cls(cls.config_class().with_overrides(sets))
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def _convert(tmp_path: Path, state: dict[str, torch.Tensor], sets: dict[str, str], filename: str) -> torch.nn.Module:
    src = tmp_path / filename
    torch.save(state, src)
    args = ["convert-checkpoint", str(src), str(tmp_path / "model")]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return load_model(tmp_path / "model")


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a - b).abs().max())


def _input(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=gen)


def test_m3d_clip_bf16_release_converts_and_matches(tmp_path: Path) -> None:
    state = seeded_state(_shapes("m3d-clip", M3D_SET), seed=1)
    release = {k: v.to(torch.bfloat16) for k, v in state.items()}  # pretrained_ViT.bin is bf16
    model = _convert(tmp_path, release, M3D_SET, "pretrained_ViT.bin")
    assert model.name == "m3d-clip"
    ref_state = {k: v.float() for k, v in release.items()}
    x = _input((2, 1, 8, 32, 48), seed=2)
    out = model.forward_features(x)
    ref = m3d_forward(ref_state, x, (4, 16, 16), heads=4)
    assert _max_diff(out["cls"], ref[:, 0]) <= TOL
    assert _max_diff(out["patch"], ref[:, 1:].reshape(2, 2, 2, 3, 48)) <= TOL
    assert out["grid"] == (2, 2, 3)


def test_radfm_full_model_file_keeps_only_the_vision_encoder(tmp_path: Path) -> None:
    vision = seeded_state(_shapes("radfm", RADFM_SET), seed=3)
    full = {f"embedding_layer.vision_encoder.{k}": v for k, v in vision.items()}
    full["embedding_layer.weight"] = torch.randn(10, 4)
    full["lang_model.model.layers.0.mlp.up_proj.weight"] = torch.randn(4, 4)
    full["embedding_layer.perceiver.latents"] = torch.randn(3, 48)
    model = _convert(tmp_path, full, RADFM_SET, "pytorch_model.bin")
    assert model.name == "radfm"
    for depth in (8, 12):  # two depths: the stretched depth positions differ
        x = _input((1, 3, 64, 48, depth), seed=depth)
        out = model.forward_features(x)
        ref = radfm_forward(full, x, 16, 4, heads=3)
        assert _max_diff(out["patch"], ref.reshape(1, 4, 3, depth // 4, 48)) <= TOL
        assert _max_diff(out["cls"], ref.mean(1)) <= TOL


def test_merlin_released_file_matches_i3d_resnet(tmp_path: Path) -> None:
    image = seeded_state(_shapes("merlin", MERLIN_SET), seed=4)
    full = {f"encode_image.i3_resnet.{k}": v for k, v in image.items()}
    full["encode_text.linear_layer.weight"] = torch.randn(6, 8)
    full["logit_scale"] = torch.tensor(1.0)
    model = _convert(tmp_path, full, MERLIN_SET, "i3_resnet_clinical_longformer.pt")
    assert model.name == "merlin"
    x = _input((2, 1, 64, 96, 48), seed=5)  # (X, Y, Z): every axis different
    out = model.forward_features(x)
    ref = merlin_forward(full, x)
    assert _max_diff(out["cls"], ref["pooled"]) <= TOL
    assert _max_diff(out["contrastive"], ref["contrastive"]) <= TOL
    assert _max_diff(out["patch"], ref["map"].permute(0, 2, 3, 4, 1)) <= TOL
    assert out["grid"] == (3, 2, 3)  # (Z/16, X/32, Y/32)


def _ctclip_release(seed: int) -> dict[str, torch.Tensor]:
    shapes = _shapes("ct-clip", CTCLIP_SET)
    state = seeded_state(shapes, seed=seed)
    full = {("to_visual_latent.weight" if k == "to_visual_latent.weight" else f"visual_transformer.{k}"): v
            for k, v in state.items()}
    # keys of the original that the encoder never uses
    dim, heads, dh = 32, 2, 8
    for tr in ("enc_spatial_transformer", "enc_temporal_transformer"):
        for i in range(2):
            full[f"visual_transformer.{tr}.layers.{i}.1.null_kv"] = torch.zeros(heads, 0, dh)
            full[f"visual_transformer.{tr}.layers.{i}.1.context_norm.gamma"] = torch.ones(dim)
            full[f"visual_transformer.{tr}.layers.{i}.1.context_norm.beta"] = torch.zeros(dim)
    full["visual_transformer.vq._codebook.initted"] = torch.tensor([1.0])
    full["visual_transformer.vq._codebook.cluster_size"] = torch.ones(1, 64)
    full["visual_transformer.vq._codebook.embed_avg"] = torch.randn(1, 64, dim)
    full["visual_transformer.to_pixels.0.weight"] = torch.randn(4 * 144, dim)
    full["visual_transformer.to_patch_emb_first_frame.1.weight"] = torch.randn(144)
    full["text_transformer.embeddings.word_embeddings.weight"] = torch.randn(11, 8)
    full["to_text_latent.weight"] = torch.randn(10, 8)
    full["temperature"] = torch.tensor(1.0)
    return full


def test_ct_clip_whole_clip_file_matches_ctvit_vq_and_latent(tmp_path: Path) -> None:
    full = _ctclip_release(seed=6)
    model = _convert(tmp_path, full, CTCLIP_SET, "CT-CLIP_v2.pt")
    assert model.name == "ct-clip"
    x = _input((2, 1, 12, 48, 48), seed=7) * 2 - 1
    ref = ctclip_forward(full, x, 12, 4, heads=2)
    model.config = model.config.replace(quantize=False)  # compare the continuous tokens first
    unquantised = model.forward_features(x)
    assert _max_diff(unquantised["patch"], ref["encoded"]) <= TOL
    model.config = model.config.replace(quantize=True)
    out = model.forward_features(x)
    assert _max_diff(out["patch"], ref["tokens"]) <= TOL
    assert _max_diff(out["cls"], ref["latent"]) <= TOL
    assert torch.allclose(out["cls"].norm(dim=-1), torch.ones(2))
    assert len(torch.unique(out["patch"].reshape(-1, 32), dim=0)) > 3  # several codes in use


def test_ct_clip_temporal_peg_reproduces_the_scrambled_reshape(tmp_path: Path) -> None:
    """A PEG that put the temporal tokens back in (t, h, w) order first would give other outputs."""
    full = _ctclip_release(seed=8)
    model = _convert(tmp_path, full, CTCLIP_SET, "CT-CLIP_v2.pt")
    model.config = model.config.replace(quantize=False)
    x = _input((1, 1, 12, 48, 48), seed=9)
    ours = model.forward_features(x)["patch"]
    import voxelfm.models.backbones.ctclip as ctclip

    original = ctclip._PEG.forward

    def natural(self, tokens, video_shape):  # type: ignore[no-untyped-def]
        b, t, h, w = video_shape
        if tokens.shape[1] == t:  # temporal: (b h w) t d → b t h w d before the conv
            grid = tokens.reshape(b, h, w, t, -1).permute(0, 3, 1, 2, 4).reshape(b * h * w * t, -1)
            out = original(self, grid.reshape(b * t, h * w, -1), video_shape)
            return out.reshape(b, t, h, w, -1).permute(0, 2, 3, 1, 4).reshape(tokens.shape)
        return original(self, tokens, video_shape)

    ctclip._PEG.forward = natural
    try:
        other = model.forward_features(x)["patch"]
    finally:
        ctclip._PEG.forward = original
    assert _max_diff(ours, other) > 1e-2


@pytest.mark.parametrize("name", ["m3d-clip", "ct-clip", "merlin", "radfm"])
def test_wrong_architecture_is_a_one_line_error(tmp_path: Path, name: str) -> None:
    sets = {"m3d-clip": M3D_SET, "ct-clip": CTCLIP_SET, "merlin": MERLIN_SET, "radfm": RADFM_SET}[name]
    state = seeded_state(_shapes(name, sets), seed=0)
    torch.save(state, tmp_path / "w.pt")
    result = CliRunner().invoke(app, ["convert-checkpoint", str(tmp_path / "w.pt"), str(tmp_path / "m"),
                                      "--from", name])  # full-size defaults: shapes do not fit
    assert result.exit_code == 1
    assert "weights do not fit the architecture" in " ".join(result.output.split())
