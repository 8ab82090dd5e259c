"""The report model reads the image: features whose scans share one large component (as ViT
features do) still steer the generated findings once the projector standardises its input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import FINDINGS, NORMAL, SENTENCES
from voxelfm.report.dataset import ReportRecord, VisionTokens, batch_cls_mask, vision_tokens
from voxelfm.report.projector import FeatureProjector, ProjectorConfig


def _offset_cohort(n: int = 120, width: int = 24, offset: float = 5.0, seed: int = 0):
    """Each finding adds its prototype to half the patches, on top of an offset every scan shares."""
    rng = np.random.default_rng(seed)
    protos = rng.normal(size=(len(FINDINGS), width))
    common = offset * rng.normal(size=width)
    features, records = {}, []
    for i in range(n):
        present = rng.random(len(FINDINGS)) < 0.35
        patch = rng.normal(size=(2, 2, 2, width)) + common
        for k in np.flatnonzero(present):
            patch[k % 2] += 0.5 * protos[k]
        sid = f"scan{i:03d}"
        features[sid] = (patch.mean(axis=(0, 1, 2)).astype(np.float32), patch.astype(np.float32))
        text = " ".join(SENTENCES[FINDINGS[k]] for k in np.flatnonzero(present)) or NORMAL
        split = "train" if i < n * 0.6 else ("val" if i < n * 0.7 else "test")
        records.append(ReportRecord(sid, split, text, patient_id=f"p{i:03d}"))
    return features, records


def _projector(**kw) -> FeatureProjector:
    torch.manual_seed(0)
    return FeatureProjector(ProjectorConfig(in_dim=6, out_dim=8, hidden_dim=12, num_queries=3, num_heads=2,
                                            dropout=0.0, **kw)).eval()


def test_standardisation_uses_training_statistics_per_token_kind() -> None:
    gen = torch.Generator().manual_seed(0)
    patches = 100 + 3 * torch.randn(40, 50, 6, generator=gen)
    cls = -20 + 0.5 * torch.randn(40, 6, generator=gen)
    proj = _projector()
    untouched = proj.standardized(patches[0, :5])
    assert torch.equal(untouched, patches[0, :5])  # identity until fitted
    proj.fit_standardization(list(zip(patches, cls, strict=True)))
    z = proj.standardized(patches.reshape(-1, 6))
    assert z.mean(0).abs().max() < 1e-4 and (z.std(0) - 1).abs().max() < 0.01
    tokens = torch.cat([patches[0, :3], cls[:1]])[None]  # three patches then the CLS token
    item = VisionTokens(tokens[0], (1, 1, 3), has_cls=True)
    zc = proj.standardized(tokens, batch_cls_mask([item]))
    assert zc[0, -1].abs().max() < 5  # the CLS token by its own statistics, not the patches'
    assert proj.standardized(tokens)[0, -1].abs().max() > 30


def test_a_constant_channel_does_not_blow_up() -> None:
    proj = _projector()
    patches = torch.randn(20, 10, 6)
    patches[..., 2] = 7.0  # never varies in training
    proj.fit_standardization([(p, None) for p in patches])
    moved = patches[0, :1].clone()
    moved[0, 2] = 7.5
    assert proj.standardized(moved).abs().max() < 100


def test_the_summary_token_carries_what_differs_between_scans() -> None:
    """Scans that differ by a small shift under a large shared offset and large token-to-token
    spread: the extra summary token varies across scans far more than the pooled query tokens."""
    gen = torch.Generator().manual_seed(1)
    shift = 0.3 * torch.randn(30, 1, 6, generator=gen)
    patches = 50 + 2 * torch.randn(30, 64, 6, generator=gen) + shift
    proj = _projector()
    proj.fit_standardization([(p, None) for p in patches])
    with torch.no_grad():
        out = proj(patches)
    assert out.shape == (30, 3 + 1, 8)  # the summary token comes first, then the queries

    def relative_spread(t: torch.Tensor) -> float:  # across-scan std / typical size
        return float(t.std(0).mean() / t.abs().mean())

    assert relative_spread(out[:, 0]) > 2 * relative_spread(out[:, 1:])


def test_statistics_travel_with_the_weights(tmp_path) -> None:
    proj = _projector()
    proj.fit_standardization([(5 + torch.randn(10, 6), torch.randn(6)) for _ in range(8)])
    proj.save(tmp_path)
    again = FeatureProjector.load(tmp_path).eval()
    x = torch.randn(2, 4, 6)
    assert torch.equal(again.feature_mean, proj.feature_mean) and torch.equal(again.summary_scale, proj.summary_scale)
    assert torch.allclose(proj(x), again(x))
    # a projector saved before standardisation and the summary token existed loads as it was
    old = _projector(standardize=False, summary_token=False)
    old.save(tmp_path / "old")
    cfg_path = tmp_path / "old" / "projector.json"
    fields = json.loads(cfg_path.read_text())
    del fields["standardize"], fields["summary_token"]
    cfg_path.write_text(json.dumps(fields))
    loaded = FeatureProjector.load(tmp_path / "old")
    assert not loaded.config.standardize and not loaded.config.summary_token


def test_vision_tokens_mark_their_cls_row() -> None:
    rng = np.random.default_rng(0)
    with_cls = vision_tokens(rng.normal(size=4), rng.normal(size=(1, 2, 2, 4)))
    without = vision_tokens(rng.normal(size=4), rng.normal(size=(1, 1, 2, 4)), use_cls=False)
    mask = batch_cls_mask([with_cls, without])
    assert mask.tolist() == [[False, False, False, False, True], [False, False, False, False, False]]


@pytest.mark.slow
def test_reports_follow_the_image_despite_a_shared_offset(tmp_path) -> None:
    """With the projector's standardisation and summary token the reports name the planted findings
    of each scan; with the paper's layout the same training writes one text for every scan."""
    from voxelfm.report.findings import FindingVocabulary
    from voxelfm.report.model import DecodingConfig
    from voxelfm.report.run import run_report_generation
    from voxelfm.report.train import ReportTrainConfig

    features, records = _offset_cohort()
    test_ids = [r.scan_id for r in records if r.split == "test"]
    metrics = {}
    for ours in (True, False):
        cfg = ReportTrainConfig(stage1_epochs=1.0, stage2_epochs=8.0, stage2_lr=1e-3, num_queries=8, projector_hidden=64,
                                max_val_examples=4, seed=4, standardize_features=ours, summary_token=ours)
        metrics[ours] = run_report_generation(
            features, records, test_ids, out_dir=tmp_path / str(ours), config=cfg, lm="tiny",
            decoding=DecodingConfig(max_new_tokens=24), n_bootstrap=20, extractor=_extractor(FindingVocabulary)).metrics
    ours, paper = metrics[True], metrics[False]
    assert ours["reports"]["distinct"] >= 4 and paper["reports"]["distinct"] == 1
    assert ours["findings"]["macro"]["f1"] > ours["baseline_every_finding"]["macro"]["f1"] + 0.05
    assert ours["findings"]["macro"]["f1"] > paper["findings"]["macro"]["f1"] + 0.2
    # the loss of a reference is lower with its own image than with another scan's only with ours
    assert ours["image_reliance"]["gap"] > 0.1 and abs(paper["image_reliance"]["gap"]) < 0.01


def _extractor(vocabulary_cls):
    from voxelfm.report.findings import RuleBasedExtractor

    return RuleBasedExtractor(vocabulary_cls.ct_rate().subset(list(FINDINGS)))
