"""The conspicuity knob and the enriched prevalences: default unchanged, only magnitudes move."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from voxelfm.core.errors import ConfigError
from voxelfm.data.phantom import (
    FINDINGS,
    PrevalenceConfig,
    generate_scan,
    phantom_config,
    write_cohort,
)
from voxelfm.data.phantom.conspicuity import COUNTS, RANGES, apply_conspicuity
from voxelfm.data.phantom.patient import sample_patient


def _patient(config: PrevalenceConfig, index: int = 0):
    return sample_patient(np.random.default_rng([3, index]), f"P{index}", config)


def test_default_is_unchanged():
    assert phantom_config() is None  # the default cohort keeps config=None (same files, same resume settings)
    params = _patient(PrevalenceConfig()).params
    assert apply_conspicuity(params, 0.0) is params
    assert "conspicuity" not in params and "atelectasis_mm" not in params


def test_only_magnitudes_move():
    for index in range(20):
        plain = _patient(PrevalenceConfig(), index)
        severe = _patient(PrevalenceConfig(conspicuity=1.0), index)
        half = _patient(PrevalenceConfig(conspicuity=0.5), index)
        # Same patient: demographics, findings, anatomy, positions, sides, kinds.
        assert (plain.age, plain.sex, plain.bmi, plain.findings) == (severe.age, severe.sex, severe.bmi, severe.findings)
        for key in ("anatomy_seed", "heart_scale", "aorta_radius_mm", "effusion_side", "material"):
            assert plain.params[key] == severe.params[key]
        assert plain.params["consolidation"]["unit_pos"] == severe.params["consolidation"]["unit_pos"]
        assert [n["kind"] for n in plain.params["nodules"]] == [n["kind"] for n in severe.params["nodules"]]
        # Every magnitude at c = 1 lies in its severe range; c = 0.5 lies between.
        for key, r in RANGES.items():
            holder_p, holder_s, holder_h = plain.params, severe.params, half.params
            *path, leaf = key.split(".")
            for part in path:
                holder_p, holder_s, holder_h = holder_p[part], holder_s[part], holder_h[part]
            s_values = np.atleast_1d(holder_s[leaf])
            assert np.all((s_values >= r.severe_lo - 1e-9) & (s_values <= r.severe_hi + 1e-9)), key
            if leaf in holder_p:  # painting constants exist only when c > 0
                p_values, h_values = np.atleast_1d(holder_p[leaf]), np.atleast_1d(holder_h[leaf])
                assert np.all(np.minimum(p_values, s_values) - 1e-9 <= h_values), key
                assert np.all(h_values <= np.maximum(p_values, s_values) + 1e-9), key
        for key in COUNTS:
            group, leaf = key.split(".")
            assert severe.params[group][leaf] >= plain.params[group][leaf]
        for a, b in zip(plain.params["nodules"], severe.params["nodules"], strict=True):
            assert b["diameter_mm"] == min(30.0, round(a["diameter_mm"] * 2, 1))


def test_conspicuous_findings_are_larger_in_the_image():
    findings = dict.fromkeys(FINDINGS, 0) | {"pleural_effusion": 1, "lung_nodule": 1, "consolidation": 1}
    plain = generate_scan(2, seed=1, size="tiny", findings=findings)
    severe = generate_scan(2, seed=1, size="tiny", findings=findings, config=PrevalenceConfig(conspicuity=1.0))
    assert plain.volume.shape == severe.volume.shape  # same acquisition
    assert severe.row["effusion_volume_ml"] > plain.row["effusion_volume_ml"]
    assert severe.row["largest_nodule_mm"] > plain.row["largest_nodule_mm"]
    lung = lambda s: np.isin(s.labels, (1, 2))  # noqa: E731
    dense = lambda s: float(np.mean(s.volume.array[lung(s)] > -500))  # noqa: E731
    assert dense(severe) > dense(plain)


def test_enriched_prevalence_and_bad_values():
    config = phantom_config("enriched")
    rng = np.random.default_rng(0)
    patients = [sample_patient(rng, "x", config) for _ in range(600)]
    rates = {f: np.mean([p.findings[f] for p in patients]) for f in FINDINGS}
    assert all(0.18 < r < 0.45 for r in rates.values()), rates
    assert phantom_config("enriched", 0.5).conspicuity == 0.5
    with pytest.raises(ConfigError, match="prevalence"):
        phantom_config("rare")
    with pytest.raises(ConfigError, match="conspicuity"):
        PrevalenceConfig(conspicuity=1.5)


def test_cli_options_and_resume_check(tmp_path):
    from voxelfm.cli.main import app

    runner = CliRunner()
    out = tmp_path / "severe"
    args = ["phantom", str(out), "--n", "1", "--size", "tiny", "--seed", "3", "--workers", "1"]
    result = runner.invoke(app, [*args, "--prevalence", "enriched", "--conspicuity", "1"])
    assert result.exit_code == 0, result.output
    settings = json.loads((out / ".phantom" / "settings.json").read_text())
    assert settings["custom_config"] and "config_digest" in settings
    assert "Conspicuity 1" in (out / "dataset.md").read_text()
    # The same folder with another conspicuity is another cohort, not a resume.
    with pytest.raises(ConfigError, match="other settings"):
        write_cohort(out, n=1, seed=3, size="tiny", workers=1, config=phantom_config("enriched", 0.5))
    bad = runner.invoke(app, [args[0], str(tmp_path / "bad"), *args[2:], "--conspicuity", "2"])
    assert bad.exit_code == 1 and "conspicuity" in bad.output
    plain = runner.invoke(app, ["phantom", str(tmp_path / "plain"), "--n", "1", "--size", "tiny", "--seed", "3",
                                "--workers", "1"])
    assert plain.exit_code == 0, plain.output
    assert "config_digest" not in json.loads((tmp_path / "plain" / ".phantom" / "settings.json").read_text())
    a, b = pd.read_csv(out / "labels.csv"), pd.read_csv(tmp_path / "plain" / "labels.csv")
    assert list(a["scan_id"]) == list(b["scan_id"]) and list(a["age"]) == list(b["age"])
