"""Independent re-statements of the four comparator encoders' ORIGINAL forward passes.

Written from the published formulations and facts read in the original code (see
docs/backbones.md), on plain state dicts *in the original key layout* (prefixes included), with
functional torch only and no code shared with ``voxelfm.models.backbones``: patches cut with
``unfold``, attention materialised in full with an eager softmax, BatchNorm written out, CT-CLIP's
position-bias MLP evaluated pair by pair. Used by test_comparator_parity.py.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _ln(x: torch.Tensor, sd: dict, name: str, weight: str = "weight", bias: str | None = "bias") -> torch.Tensor:
    mu = x.mean(-1, keepdim=True)
    var = x.var(-1, keepdim=True, unbiased=False)
    y = (x - mu) / torch.sqrt(var + 1e-5) * sd[f"{name}.{weight}"]
    return y + sd[f"{name}.{bias}"] if bias else y


def _lin(x: torch.Tensor, sd: dict, name: str) -> torch.Tensor:
    y = x @ sd[f"{name}.weight"].T
    return y + sd[f"{name}.bias"] if f"{name}.bias" in sd else y


def _cut(x: torch.Tensor, p: tuple[int, int, int], order: str) -> torch.Tensor:
    """(B, C, A0, A1, A2) → (B, N, patch_dim) with tokens in (a0 a1 a2) order and features in ``order``."""
    b, c = x.shape[:2]
    u = x.unfold(2, p[0], p[0]).unfold(3, p[1], p[1]).unfold(4, p[2], p[2])  # b c g0 g1 g2 p0 p1 p2
    g = u.shape[2:5]
    perm = (0, 2, 3, 4, 5, 6, 7, 1) if order == "p c" else (0, 2, 3, 4, 1, 5, 6, 7)  # "c p"
    u = u.permute(*perm)
    return u.reshape(b, g[0] * g[1] * g[2], -1), tuple(g)


def _softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                       bias: torch.Tensor | None = None) -> torch.Tensor:
    sim = torch.einsum("bhid,bhjd->bhij", q, k) * scale
    if bias is not None:
        sim = sim + bias
    return torch.einsum("bhij,bhjd->bhid", sim.softmax(-1), v)


# -- M3D-CLIP (MONAI ViT, perceptron patch embedding, CLS) ---------------------------------------
def m3d_forward(sd: dict, x: torch.Tensor, patch: tuple[int, int, int], heads: int) -> torch.Tensor:
    """Normed tokens (B, 1 + N, C) of M3D's ViT from ``pretrained_ViT.bin`` keys."""
    tokens, _ = _cut(x, patch, "p c")
    t = _lin(tokens, sd, "patch_embedding.patch_embeddings.1") + sd["patch_embedding.position_embeddings"]
    t = torch.cat([sd["cls_token"].expand(x.shape[0], -1, -1), t], dim=1)
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    for i in range(depth):
        pre = f"blocks.{i}"
        h = _ln(t, sd, f"{pre}.norm1")
        b, n, c = h.shape
        qkv = _lin(h, sd, f"{pre}.attn.qkv").reshape(b, n, 3, heads, c // heads)  # (qkv l d) split
        q, k, v = (qkv[:, :, j].transpose(1, 2) for j in range(3))
        out = _softmax_attention(q, k, v, (c // heads) ** -0.5).transpose(1, 2).reshape(b, n, c)
        t = t + _lin(out, sd, f"{pre}.attn.out_proj")
        h = _ln(t, sd, f"{pre}.norm2")
        t = t + _lin(F.gelu(_lin(h, sd, f"{pre}.mlp.linear1")), sd, f"{pre}.mlp.linear2")
    return _ln(t, sd, "norm")


# -- RadFM (vit_3d.ViT: LN-Linear-LN patch embedding, stretched factorised positions) -------------
def radfm_forward(sd: dict, x: torch.Tensor, patch: int, frame_patch: int, heads: int,
                  prefix: str = "embedding_layer.vision_encoder.") -> torch.Tensor:
    """Tokens (B, N, C) in (h w d) order from RadFM's full-model keys."""
    s = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    tokens, (gh, gw, gd) = _cut(x, (patch, patch, frame_patch), "p c")
    t = _ln(tokens, s, "to_patch_embedding.1")
    t = _ln(_lin(t, s, "to_patch_embedding.2"), s, "to_patch_embedding.3")
    rows, cols, deps = s["pos_embedding.row_embed.weight"], s["pos_embedding.col_embed.weight"], s["pos_embedding.dep_embed.weight"]
    pos = []
    for i in range(gh):
        for j in range(gw):
            for k in range(gd):
                pos.append(torch.cat([rows[(i + 1) * (rows.shape[0] // gh) - 1], cols[(j + 1) * (cols.shape[0] // gw) - 1],
                                      deps[(k + 1) * (deps.shape[0] // gd) - 1]]))
    t = t + torch.stack(pos)[None]
    depth = len({k.split(".")[2] for k in s if k.startswith("transformer.layers.")})
    for i in range(depth):
        pre = f"transformer.layers.{i}"
        h = _ln(t, s, f"{pre}.0.norm")
        b, n, _ = h.shape
        q, k, v = (z.reshape(b, n, heads, -1).transpose(1, 2) for z in (h @ s[f"{pre}.0.fn.to_qkv.weight"].T).chunk(3, -1))
        out = _softmax_attention(q, k, v, q.shape[-1] ** -0.5).transpose(1, 2).reshape(b, n, -1)
        t = t + _lin(out, s, f"{pre}.0.fn.to_out.0")
        h = _ln(t, s, f"{pre}.1.norm")
        t = t + _lin(F.gelu(_lin(h, s, f"{pre}.1.fn.net.0")), s, f"{pre}.1.fn.net.3")
    return t


# -- Merlin (I3D ResNet, inflated torchvision ResNet Bottlenecks) ---------------------------------
def _bn(x: torch.Tensor, sd: dict, name: str) -> torch.Tensor:
    shape = (1, -1, 1, 1, 1)
    inv = 1.0 / torch.sqrt(sd[f"{name}.running_var"] + 1e-5)
    return (x - sd[f"{name}.running_mean"].view(shape)) * (inv * sd[f"{name}.weight"]).view(shape) + sd[f"{name}.bias"].view(shape)


def merlin_forward(sd: dict, x: torch.Tensor, prefix: str = "encode_image.i3_resnet.") -> dict[str, torch.Tensor]:
    """Layer-4 map (B, C, z, x, y), the 2048-d pooled vector and the contrastive embedding."""
    s = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    h = x.permute(0, 1, 4, 2, 3).repeat(1, 3, 1, 1, 1)
    h = F.relu(_bn(F.conv3d(h, s["conv1.weight"], stride=(1, 2, 2), padding=(1, 3, 3)), s, "bn1"))
    h = F.max_pool3d(h, (3, 3, 3), (2, 2, 2), (1, 1, 1))
    for layer in range(1, 5):
        block = 0
        while f"layer{layer}.{block}.conv1.weight" in s:
            pre = f"layer{layer}.{block}"
            stride = 2 if (layer > 1 and block == 0) else 1  # torchvision v1.5: stride on the 3x3 conv
            out = F.relu(_bn(F.conv3d(h, s[f"{pre}.conv1.weight"]), s, f"{pre}.bn1"))
            out = F.relu(_bn(F.conv3d(out, s[f"{pre}.conv2.weight"], stride=stride, padding=1), s, f"{pre}.bn2"))
            out = _bn(F.conv3d(out, s[f"{pre}.conv3.weight"]), s, f"{pre}.bn3")
            if f"{pre}.downsample.0.weight" in s:
                h = _bn(F.conv3d(h, s[f"{pre}.downsample.0.weight"], stride=stride), s, f"{pre}.downsample.1")
            h = F.relu(out + h)
            block += 1
    pooled = h.mean(dim=(2, 3, 4))
    w = s["contrastive_head.weight"].flatten(1)
    return {"map": h, "pooled": pooled, "contrastive": pooled @ w.T + s["contrastive_head.bias"]}


# -- CT-CLIP (CTViT encoder + VQ + visual latent) -----------------------------------------------
def _position_bias(s: dict, h: int, w: int) -> torch.Tensor:
    coords = [(i, j) for i in range(h) for j in range(w)]
    rel = torch.tensor([[[float(a[0] - b[0]), float(a[1] - b[1])] for b in coords] for a in coords])
    rel = torch.sign(rel) * torch.log(rel.abs() + 1.0)
    z = F.leaky_relu(_lin(rel, s, "spatial_rel_pos_bias.net.0.0"), 0.1)
    z = F.leaky_relu(_lin(z, s, "spatial_rel_pos_bias.net.1.0"), 0.1)
    return _lin(z, s, "spatial_rel_pos_bias.net.2").permute(2, 0, 1)


def _ctclip_transformer(s: dict, pre: str, x: torch.Tensor, video: tuple[int, int, int, int], heads: int,
                        bias: torch.Tensor | None) -> torch.Tensor:
    depth = len({k[len(pre):].split(".")[1] for k in s if k.startswith(pre + "layers.")})
    for i in range(depth):
        lp = f"{pre}layers.{i}"
        # PEG: the flat (B*, L, d) tensor is reshaped straight to the video shape (no transpose)
        g = x.reshape(*video, -1).permute(0, 4, 1, 2, 3)
        g = F.pad(g, (1, 1, 1, 1, 2, 0))
        g = F.conv3d(g, s[f"{lp}.0.dsconv.weight"], s[f"{lp}.0.dsconv.bias"], groups=g.shape[1])
        x = g.permute(0, 2, 3, 4, 1).reshape(x.shape) + x
        # attention: q from the normed input, k/v from the raw input; cosine-sim logits x 8
        b, n, _ = x.shape
        q = _ln(x, s, f"{lp}.1.norm", "gamma", "beta") @ s[f"{lp}.1.to_q.weight"].T
        k, v = (x @ s[f"{lp}.1.to_kv.weight"].T).chunk(2, -1)
        q, k, v = (z.reshape(b, n, heads, -1).transpose(1, 2) for z in (q, k, v))
        q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12) * s[f"{lp}.1.q_scale"]
        k = k / k.norm(dim=-1, keepdim=True).clamp_min(1e-12) * s[f"{lp}.1.k_scale"]
        out = _softmax_attention(q, k, v, 8.0, bias).transpose(1, 2).reshape(b, n, -1)
        x = out @ s[f"{lp}.1.to_out.weight"].T + x
        hh = _ln(x, s, f"{lp}.3.0") @ s[f"{lp}.3.1.weight"].T
        a, gate = hh.chunk(2, -1)
        x = (a * F.gelu(gate)) @ s[f"{lp}.3.4.weight"].T + x
    return _ln(x, s, f"{pre}norm_out", "gamma", "beta")


def ctclip_forward(sd: dict, x: torch.Tensor, patch: int, temporal_patch: int, heads: int) -> dict[str, torch.Tensor]:
    """Quantised token grid (B, t, h, w, d) and the L2-normalised visual latent, from CT-CLIP_v2.pt keys."""
    s = {k[len("visual_transformer."):]: v for k, v in sd.items() if k.startswith("visual_transformer.")}
    tokens, (t, h, w) = _cut(x, (temporal_patch, patch, patch), "c p")
    z = _ln(tokens, s, "to_patch_emb.1")
    z = _ln(_lin(z, s, "to_patch_emb.2"), s, "to_patch_emb.3")
    b = x.shape[0]
    video = (b, t, h, w)
    z = z.reshape(b * t, h * w, -1)
    z = _ctclip_transformer(s, "enc_spatial_transformer.", z, video, heads, _position_bias(s, h, w))
    z = z.reshape(b, t, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b * h * w, t, -1)
    z = _ctclip_transformer(s, "enc_temporal_transformer.", z, video, heads, None)
    z = z.reshape(b, h, w, t, -1).permute(0, 3, 1, 2, 4)
    codes = s["vq._codebook.embed"][0]
    flat = z.reshape(-1, z.shape[-1])
    cos = (flat / flat.norm(dim=-1, keepdim=True)) @ (codes / codes.norm(dim=-1, keepdim=True)).T
    quant = codes[cos.argmax(-1)].reshape(z.shape)
    latent = quant.mean(dim=1).reshape(b, -1) @ sd["to_visual_latent.weight"].T
    return {"tokens": quant, "latent": latent / latent.norm(dim=-1, keepdim=True), "encoded": z}


def seeded_state(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    """Random weights with a scale per role, so every block changes its input noticeably."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in shapes.items():
        noise = torch.randn(shape, generator=gen)
        if name.endswith("num_batches_tracked"):
            out[name] = torch.tensor(7)
        elif name.endswith("running_var"):
            out[name] = 0.5 + torch.rand(shape, generator=gen)
        elif name.endswith(("running_mean", "bias", "beta")):
            out[name] = 0.1 * noise
        elif name.endswith(("gamma", "q_scale", "k_scale")) or (len(shape) == 1 and name.endswith("weight")):
            out[name] = 1.0 + 0.2 * noise  # LayerNorm / BatchNorm gains and attention scales
        elif name.endswith(("position_embeddings", "cls_token")):
            out[name] = 0.5 * noise
        else:
            fan_in = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
            out[name] = noise / math.sqrt(max(fan_in, 1))
    return out
