"""Config resolution: defaults mirror the original, YAML merge, key=value overrides, checks."""

from __future__ import annotations

import pytest

from voxelfm.core.errors import ConfigError
from voxelfm.ssl.config import crop_pairs, load_config, packaged_config, parse_override


def test_defaults_mirror_the_original_config() -> None:
    c = load_config(None)
    assert (c["student"]["embed_dim"], c["student"]["depth"], c["student"]["num_heads"], c["student"]["patch_size"]) == (864, 12, 12, 14)
    assert c["dino"]["head_n_prototypes"] == 65536 and c["dino"]["koleo_loss_weight"] == 0.1
    assert c["ibot"]["mask_ratio_min_max"] == [0.1, 0.5] and c["ibot"]["mask_sample_probability"] == 0.5
    assert c["crops"]["global_crops_size"] == 112 and c["crops"]["local_crops_number"] == 8
    assert c["optim"]["clip_grad"] == 3.0 and c["optim"]["layerwise_decay"] == 0.9
    assert c["datasets"][0]["norm"] == {"mean": -573.8, "std": 461.3}


def test_yaml_file_then_overrides(tmp_path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("student:\n  arch: vit-tiny\ntrain:\n  seed: 3\n  total_batch_size: null\n")
    c = load_config(path, ["train.seed=5", "crops.global_crops_size=[56, 70, 84]", "student.depth=2"])
    assert c["train"]["seed"] == 5
    assert c["student"]["embed_dim"] == 216 and c["student"]["depth"] == 2  # preset fills unset keys only
    assert crop_pairs(c)[0] == [(56, 70, 84)]


def test_dataset_overrides_reach_the_default_entry() -> None:
    c = load_config(None, ["datasets.0.index_path=/data/index.csv"])
    assert c["datasets"][0]["index_path"] == "/data/index.csv" and c["datasets"][0]["pixel_range"]["lower"] == -1000


def test_multiresolution_crop_lists() -> None:
    c = load_config(None, ["crops.global_crops_size=[[112, 112, 112], [70, 140, 140]]", "crops.local_crops_size=56",
                           "crops.crop_pairs_ratios=[3, 1]"])
    g, loc, ratios = crop_pairs(c)
    assert g == [(112, 112, 112), (70, 140, 140)] and loc == [(56, 56, 56)] * 2 and ratios == [0.75, 0.25]


@pytest.mark.parametrize(("overrides", "message"), [
    (["optim.epochz=3"], "optim.epochz"),
    (["train.centering=median"], "train.centering"),
    (["student.embed_dim=100"], "embed_dim"),
    (["crops.global_crops_size=7"], "smaller than the patch size"),
    (["novalue"], "section.key=value"),
])
def test_bad_configs_raise_config_errors_naming_the_key(overrides, message) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_total_batch_size_is_checked_against_the_world() -> None:
    from voxelfm.ssl.config import check_batch_size

    config = load_config(None)
    check_batch_size(config, world_size=8)  # 16 x 16 x 8 = 2048, as the original
    with pytest.raises(ConfigError, match="total_batch_size"):
        check_batch_size(config, world_size=1)


def test_unknown_key_in_file_names_the_file(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  lr_typo: 1\n")
    with pytest.raises(ConfigError, match="bad.yaml: unknown config key 'optim.lr_typo'"):
        load_config(path)


def test_override_values_are_yaml_typed() -> None:
    assert parse_override("a.b=1e-3") == (["a", "b"], 1e-3)
    assert parse_override("a=[1, 2]") == (["a"], [1, 2])
    assert parse_override("a=null") == (["a"], None)


def test_packaged_single_machine_recipe_resolves() -> None:
    c = load_config(packaged_config("cpu_tiny"), ["datasets.0.index_path=x.csv"])
    assert c["train"]["centering"] == "sinkhorn_knopp" and c["dino"]["head_n_prototypes"] == 4096
    assert c["student"]["embed_dim"] == 216
    assert load_config("cpu_tiny", ["datasets.0.index_path=x.csv"]) == c  # by name


def test_a_datasets_list_override_is_filled_from_the_defaults() -> None:
    c = load_config(None, ["datasets=[{name: mine, index_path: /data/index.csv}, {index_path: b.csv, weight: 2}]"])
    assert [d["index_path"] for d in c["datasets"]] == ["/data/index.csv", "b.csv"]
    for entry in c["datasets"]:
        assert entry["pixel_range"] == {"lower": -1000, "upper": 1900} and entry["norm"]["std"] == 461.3
    assert c["datasets"][1]["weight"] == 2 and c["datasets"][0]["storage"] == "torch"


@pytest.mark.parametrize(("yaml_text", "message"), [
    ("train:\n  resume: 'no'\n", "train.resume='no': expected true or false"),
    ("train:\n  batch_size_per_gpu: 8.5\n", "train.batch_size_per_gpu=8.5: expected an integer >= 1"),
    ("schedules:\n  lr: {peak: -1.0e-3}\n", "schedules.lr.peak=-0.001: expected a number >= 0"),
    ("crops:\n  flip_probability: 1.5\n", "crops.flip_probability=1.5: expected a number >= 0 and <= 1"),
    ("crops:\n  global_crops_scale: 0.5\n", "crops.global_crops_scale=0.5: expected a list of numbers"),
    ("monitor:\n  tensorboard: 1\n", "monitor.tensorboard=1: expected true or false"),
    ("datasets:\n  - {index_path: a.csv, norm: {mean: 0, std: 0}}\n", "datasets.0.norm.std=0: expected a number > 0"),
])
def test_yaml_values_of_the_wrong_type_or_range_are_one_line_errors(tmp_path, yaml_text, message) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert str(info.value).startswith(f"{path}: ")
