"""The single-layer Q-Former folds its token projection into the attention: same outputs as
projecting every token first, for padded and unpadded batches."""

from __future__ import annotations

import torch

from voxelfm.probes.heads import QFormerHead


def test_folded_projection_equals_projecting_every_token() -> None:
    torch.manual_seed(0)
    head = QFormerHead(40, 3, hidden_dim=32, num_queries=4, num_heads=4, token_norm=True).eval()
    x = torch.randn(5, 70, 40) * 7 + 3  # large, shifted tokens: the LayerNorm must take them
    mask = torch.ones(5, 70, dtype=torch.bool)
    mask[1, 50:] = False
    q = head.queries.expand(5, -1, -1)
    for h in (head, QFormerHead(40, 3, hidden_dim=32, num_queries=4, num_heads=4).eval()):
        tokens = h.token_proj(h.token_norm(x) if h.token_norm is not None else x)
        q = h.queries.expand(5, -1, -1)
        for m in (None, mask):
            ref = h.out(h.layers[0].attn(q, tokens, tokens, key_padding_mask=None if m is None else ~m)[0].mean(1))
            torch.testing.assert_close(h(x, mask=m), ref, atol=1e-4, rtol=1e-4)


def test_token_norm_makes_the_head_scale_invariant() -> None:
    torch.manual_seed(1)
    head = QFormerHead(16, 1, hidden_dim=16, num_queries=2, num_heads=2, token_norm=True).eval()
    x = torch.randn(3, 20, 16)
    torch.testing.assert_close(head(x), head(x * 100.0), atol=1e-4, rtol=1e-4)
    plain = QFormerHead(16, 1, hidden_dim=16, num_queries=2, num_heads=2).eval()
    assert not torch.allclose(plain(x), plain(x * 100.0))
