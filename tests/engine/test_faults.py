"""Faults met during training, end to end through `xfd.cli.train.main` (as a world of one in this process: these
runs stop within their first steps, where a 2-rank `deepspeed` launch would cost ~20 s of start-up)."""

from __future__ import annotations

import pytest
from launching import train_in_process

from xfd.engine.checkpoint import latest_tag
from xfd.engine.steps import NonFiniteLoss


@pytest.mark.slow  # a DeepSpeed engine and a training step, in process
def test_nonfinite_loss_stops_the_run_naming_stage_step_and_batch(shards, tmp_path, monkeypatch):
    # a temperature of 1e-40 scales the cosine logits to inf: the first stage-1 loss is NaN
    out = tmp_path / "run"
    with pytest.raises(NonFiniteLoss) as err:
        train_in_process(["--deepspeed", "ds_configs/zero2.json", "--config", "tiny.yaml", "--data", str(shards),
                          "--output", str(out), "train.loss.temperature=1e-40", "train.stage1.batch_size=8"],
                         monkeypatch)
    message = str(err.value)
    assert "stage 1, epoch 0, step 0" in message and "nan" in message
    assert "this rank's batch: [label " in message and "train.on_nonfinite=skip" in message
    assert latest_tag(out) is None  # nothing was checkpointed: no step was taken



def _relabel_one_sample(split, new_label: int) -> tuple[str, str]:
    """Rewrite one sample's label in its shard's `<key>.json` in place (same number of digits, so the tar stays
    valid); returns (shard path, key)."""
    import tarfile

    from xfd.data.index import ShardIndex

    index = ShardIndex.open(split)
    key = next(k for k in index.keys if len(str(index.meta(k)["label"])) == len(str(new_label)))
    shard = index.shard_of(key)
    with tarfile.open(shard) as tar:
        member = tar.getmember(f"{key}.json")
    data = bytearray(shard.read_bytes())
    text = data[member.offset_data:member.offset_data + member.size]
    old, new = f'"label":{index.meta(key)["label"]},'.encode(), f'"label":{new_label},'.encode()
    assert text.count(old) == 1
    data[member.offset_data:member.offset_data + member.size] = text.replace(old, new)
    shard.write_bytes(bytes(data))
    return str(shard), key


def test_a_label_outside_the_classifier_is_an_error_naming_shard_and_sample(shards, tmp_path, monkeypatch):
    import shutil

    from xfd.data.errors import DataError

    data = tmp_path / "shards"
    shutil.copytree(shards, data)
    shard, key = _relabel_one_sample(data / "train", 99)
    with pytest.raises(DataError) as err:
        train_in_process(["--deepspeed", "ds_configs/zero2.json", "--config", "tiny.yaml", "--data", str(data),
                          "--output", str(tmp_path / "run")], monkeypatch)
    message = str(err.value)
    assert shard in message and key in message and "training label 99 is outside the classifier's range" in message
    assert not (tmp_path / "run" / "config.yaml").exists()  # refused before any work


def test_an_engine_json_contradicting_the_precision_is_refused_before_any_work(shards, tmp_path, monkeypatch):
    """A bf16 JSON under precision=fp32 used to be overridden silently."""
    from xfd.engine.deepspeed_config import DeepSpeedConfigError

    engine = tmp_path / "bf16.json"
    engine.write_text('{"zero_optimization": {"stage": 2}, "bf16": {"enabled": true}}')
    with pytest.raises(DeepSpeedConfigError, match="bf16.enabled=true contradicts train.precision=fp32"):
        train_in_process(["--deepspeed", str(engine), "--config", "tiny.yaml", "--data", str(shards),
                          "--output", str(tmp_path / "run"), "train.precision=fp32"], monkeypatch)
    assert not (tmp_path / "run" / "config.yaml").exists()
