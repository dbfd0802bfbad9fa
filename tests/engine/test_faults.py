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

