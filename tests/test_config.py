"""xfd.config: packaged configs load; bad input is an error naming the dotted key; overrides are validated too."""

import pytest

from xfd.config import ConfigError, ExperimentConfig, config_from_dict, dump_config, load_config
import yaml

PACKAGED = ["tiny.yaml", "baseline_vitb16.yaml", "xfd_vitl14.yaml"]


@pytest.mark.parametrize("name", PACKAGED)
def test_packaged_configs_load_and_round_trip(name, tmp_path):
    cfg = load_config(name)
    assert isinstance(cfg, ExperimentConfig)
    path = tmp_path / "again.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(path) == cfg


def test_paper_settings_are_what_the_final_config_says():
    m = load_config("xfd_vitl14.yaml").model
    assert (m.backbone.name, tuple(m.backbone.image_size)) == ("ViT-L-14", (256, 128))
    assert m.finetune.trainable_blocks == [22, 23] and m.finetune.backbone_lr_scale == 0.1
    assert (m.prompts.length, m.prompts.depth) == (4, 9)
    assert m.temporal.pooling == "qatw" and m.head.neck == "instancenorm"
    b = load_config("baseline_vitb16.yaml").model
    assert (b.backbone.name, b.prompts.length, b.temporal.pooling, b.head.neck) == ("ViT-B-16", 1, "mean", "bnneck")
    assert b.finetune.trainable_blocks == [10, 11]


@pytest.mark.parametrize("override, key, fragment", [
    ("model.temporal.poolling=mean", "model.temporal.poolling", "unknown key"),
    ("model.temporal.pooling=max", "model.temporal.pooling", "expected one of"),
    ("model.prompts.length=four", "model.prompts.length", "expected an int"),
    ("model.prompts.length=0", "model.prompts.length", "must be >= 1"),
    ("model.prompts.enabled=1", "model.prompts.enabled", "expected true/false"),
    ("model.backbone.image_size=[256]", "model.backbone.image_size", "expected 2 values"),
    ("model.finetune.trainable_blocks=[22, 22]", "model.finetune.trainable_blocks", "duplicate"),
    ("model.finetune.trainable_blocks=[a]", "model.finetune.trainable_blocks[0]", "expected an int"),
    ("model.adapters.cfaa_heads=5", "model.adapters.cfaa_heads", "not divisible"),
    ("model.metadata.targets=[cls, wings]", "model.metadata.targets[1]", "expected one of"),
    ("model.text.template=A photo of X person.", "model.text.template", "consecutive 'X'"),
    ("model.num_classes=0", "model.num_classes", "must be >= 1"),
    ("model.prompts.enabled=false", "model.metadata.targets", "prompts.enabled is false"),
    ("optim.lr=1", "optim", "unknown key"),
        ("data.num_frames=0", "data.num_frames", "must be >= 1"),
        ("train.stage2.lr=0", "train.stage2.lr", "must be > 0"),
        ("train.on_nonfinite=ignore", "train.on_nonfinite", "expected one of"),
])
def test_bad_values_name_their_key(override, key, fragment):
    with pytest.raises(ConfigError) as err:
        load_config("tiny.yaml", [override])
    assert err.value.key == key
    assert fragment in str(err.value) and str(err.value).startswith(key)


def test_overrides_parse_yaml_values():
    cfg = load_config("xfd_vitl14.yaml", ["model.backbone.pretrained=null", "model.finetune.trainable_blocks=[-1]",
                                          "model.finetune.backbone_lr_scale=5e-2", "model.temporal.pooling=mean"])
    m = cfg.model
    assert m.backbone.pretrained is None and m.finetune.trainable_blocks == [-1]
    assert m.finetune.backbone_lr_scale == 0.05 and m.temporal.pooling == "mean"
    assert isinstance(m.backbone.image_size, tuple)


def test_missing_sections_take_defaults_and_malformed_overrides_fail():
    cfg = config_from_dict({"model": {"num_classes": 3}})
    assert cfg.model.num_classes == 3 and cfg.model.backbone.name == "ViT-L-14"
    with pytest.raises(ConfigError):
        config_from_dict({}, ["model.num_classes"])
    with pytest.raises(ConfigError) as err:
        config_from_dict({}, ["model.num_classes.deeper=3"])
    assert err.value.key == "model.num_classes"


def test_missing_config_file_lists_packaged_ones(tmp_path):
    with pytest.raises(FileNotFoundError, match="tiny.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_top_level_must_be_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(ConfigError, match="mapping"):
        load_config(path)


def test_a_repeated_section_or_key_is_refused_naming_it_and_both_lines(tmp_path):
    """PyYAML keeps the last of two equal keys: a second `train:` would silently reset the first one's values."""
    path = tmp_path / "twice.yaml"
    path.write_text("train:\n  seed: 1\nmodel:\n  temporal:\n    pooling: mean\n    pooling: attention\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.key == "pooling" and "line 5 and line 6" in str(caught.value) and str(path) in str(caught.value)
    path.write_text("train:\n  seed: 1\neval:\n  flip_tta: true\ntrain:\n  seed: 2\n")
    with pytest.raises(ConfigError, match=r"^train: key appears twice in the same mapping: line 1 and line 5"):
        load_config(path)
    with pytest.raises(ConfigError, match="line 1 and line 1"):  # an override's value is YAML too
        load_config("tiny.yaml", ["model.temporal={pooling: mean, pooling: attention}"])


@pytest.mark.parametrize("override, fragment", [
    ("train.identities=6", "train.stage2.batch_size (= P identities x K=train.instances"),
    ("train.gradient_accumulation=2", "train.max_micro_batch"),
    ("train.global_batch=48", "are the global batches"),
])
def test_retired_batch_keys_say_what_replaced_them(override, fragment):
    with pytest.raises(ConfigError) as err:
        load_config("xfd_vitl14.yaml", [override])
    assert err.value.key == override.split("=")[0] and "removed" in str(err.value) and fragment in str(err.value)


def test_stage2_batch_is_p_times_k():
    assert load_config("xfd_vitl14.yaml").train.identities == 6
    with pytest.raises(ConfigError) as err:
        load_config("xfd_vitl14.yaml", ["train.stage2.batch_size=26"])
    assert err.value.key == "train.stage2.batch_size" and "not a multiple of instances (K=4)" in str(err.value)
