"""The Q-Former's global skip path: starts as a linear probe, adds attention, rejects bad use."""

from __future__ import annotations

import pytest
import torch

from voxelfm.core.errors import ConfigError
from voxelfm.probes import run_probe
from voxelfm.probes.heads import HeadSpec, QFormerHead, build_head, masked_mean
from voxelfm.probes.trainer import TrainConfig, train


def _head(skip: str, **kw) -> QFormerHead:
    torch.manual_seed(0)
    return QFormerHead(16, 2, hidden_dim=8, num_queries=1, num_heads=2, skip=skip, **kw).eval()


def test_cls_skip_head_starts_as_a_linear_probe_on_the_cls():
    head = _head("cls")
    x, cls = torch.randn(3, 10, 16), torch.randn(3, 16)
    with torch.no_grad():
        head.skip_proj.weight.normal_()  # as after some training of the skip path
    out = head(x, cls=cls)
    torch.testing.assert_close(out, head.skip_proj(cls))
    torch.testing.assert_close(head(torch.randn(3, 10, 16), cls=cls), out)  # the tokens do not matter yet


def test_mean_skip_uses_only_the_real_tokens():
    head = _head("mean")
    with torch.no_grad():
        head.skip_proj.weight.normal_()
    x = torch.randn(2, 6, 16)
    mask = torch.tensor([[True] * 6, [True] * 3 + [False] * 3])
    torch.testing.assert_close(head(x, mask=mask), head.skip_proj(masked_mean(x, mask)))


def test_attention_branch_gets_a_gradient_from_the_start():
    head = _head("cls").train()
    head(torch.randn(4, 10, 16), cls=torch.randn(4, 16)).sum().backward()
    assert head.out.weight.grad.abs().sum() > 0
    assert head.skip_proj.weight.grad.abs().sum() > 0


def test_bad_skip_options_are_config_errors():
    with pytest.raises(ConfigError, match="skip"):
        build_head(HeadSpec("qformer", 16, 1, {"skip": "max", "hidden_dim": 8}))
    with pytest.raises(ConfigError, match="no CLS"):
        _head("cls")(torch.randn(2, 5, 16))


def test_trainer_adds_noise_to_the_cls_input_too():
    seen = []
    x, cls = torch.zeros(4, 3, 2), torch.zeros(4, 2)

    def loss_fn(model, batch):
        seen.append(batch["cls"].clone())
        return model(batch["x"].mean(1)).sum() * 0 + (model.weight ** 2).sum()

    model = torch.nn.Linear(2, 1)
    train(model, batches=lambda rng: [{"x": x, "cls": cls}], loss_fn=loss_fn, validate=lambda m: {"loss": 0.0},
          monitor="loss", mode="min", config=TrainConfig(epochs=1, noise_sigma=0.1))
    assert seen and 0.01 < float(seen[0].std()) < 1.0


def test_qformer_with_cls_skip_learns_a_cls_signal(cohort_factory):
    # The finding shifts the CLS strongly; its patch-token marker is too faint to matter here.
    feats, labels = cohort_factory(n=160, dim=16, grid=(2, 2, 2), strength=1.5, seed=3)
    res = run_probe("classification", feats, labels, target="finding", head="qformer", figures=False,
                    config={"bootstrap": 20, "balance": "oversample", "train": {"epochs": 6, "batch_size": 16},
                            "head_params": {"hidden_dim": 8, "num_queries": 1, "num_heads": 2, "skip": "cls"}})
    assert res.metrics["auroc"].value > 0.75  # 0.83 with this seed; chance is 0.5


def test_token_dropout_keeps_at_least_one_real_token_and_is_off_in_eval():
    torch.manual_seed(0)
    head = QFormerHead(16, 1, hidden_dim=8, num_queries=1, num_heads=2, token_dropout=0.99, feature_dropout=0.0)
    assert head.drop_tokens.p == 0.0
    x = torch.randn(64, 3, 16)
    mask = torch.ones(64, 3, dtype=torch.bool)
    mask[::2, 2] = False  # padded rows
    out = head.train()(x, mask=mask)
    assert torch.isfinite(out).all()  # every scan kept a real token to attend to
    head.eval()
    torch.testing.assert_close(head(x, mask=mask), head(x, mask=mask))
    with pytest.raises(ConfigError, match="token_dropout"):
        QFormerHead(16, 1, hidden_dim=8, num_heads=2, token_dropout=1.0)
