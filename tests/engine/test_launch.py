"""The documented command runs verbatim on CPU (gloo, 2 ranks) through both stages, every packaged ds_config
passes a short run, bf16 trains on CPU ranks, and one rank trains the same global batches and optimizer steps as
two."""

from __future__ import annotations

import json

import pytest
import torch
from launching import RESUME_OVERRIDES, RESUME_TOTAL_STEPS, SHORT_OVERRIDES, launch, shared_memory_left

from xfd.engine.checkpoint import CHECKPOINTS, latest_tag, load_trained_model, parse_tag
from xfd.model import build_model
from xfd.plots import read_scalar_rows

pytestmark = pytest.mark.slow  # deepspeed launches of 2 CPU ranks (`make test-quick` leaves them out)


def block_prefix(block: int) -> str:
    return f"encoder.visual.transformer.resblocks.{block}."


def check_trained_model(path, expect_frozen_unchanged: bool = True, dtype: torch.dtype = torch.float32) -> None:
    """The file loads strictly; the trainable backbone blocks moved away from the seed's initial weights, the
    frozen ones did not (beyond their rounding to the training `dtype`)."""
    model, cfg, metadata = load_trained_model(path)
    assert metadata["format"] == "xfd-model-1"
    torch.manual_seed(cfg.train.seed)  # as xfd.engine.train builds the initial model on every rank
    untrained = {k: v.to(dtype).to(v.dtype) for k, v in build_model(cfg).state_dict().items()}
    trained = model.state_dict()
    trainable = list(cfg.model.finetune.trainable_blocks)
    assert trainable, "tiny.yaml fine-tunes some backbone blocks"
    blocks = {int(k.split(".")[4]) for k in trained if k.startswith("encoder.visual.transformer.resblocks.")}
    for block in sorted(blocks):
        names = [k for k in trained if k.startswith(block_prefix(block)) and trained[k].is_floating_point()]
        assert names
        changed = [k for k in names if not torch.equal(trained[k], untrained[k])]
        if block in trainable:
            weights = [k for k in names if k.endswith("weight") and "ln_" not in k]
            assert set(weights) <= set(changed), f"block {block} did not train: {sorted(set(weights) - set(changed))}"
        elif expect_frozen_unchanged:
            assert not changed, f"frozen block {block} changed: {changed}"


def check_run_folder(run, stages=(1, 2), global_steps: int | None = None) -> list[dict]:
    out = run.output
    for name in ("config.yaml", "run.json", "scalars.csv", "summary.json", "model.safetensors",
                 "text_features.safetensors"):
        assert (out / name).is_file(), f"{name} missing from {out}\n{run.tail()}"
    summary = json.loads((out / "summary.json").read_text())
    if global_steps is not None:
        assert summary["global_step"] == global_steps
    assert summary["skipped_nonfinite"] == 0
    rows = read_scalar_rows(out / "scalars.csv")
    for stage in stages:
        losses = [r for r in rows if r["stage"] == stage and r["name"] == "loss"]
        assert losses, f"no stage-{stage} loss rows in scalars.csv"
        assert all(r["value"] == r["value"] for r in losses)
    assert {r["stage"] for r in rows} == set(stages)
    tag = latest_tag(out)
    assert tag is not None and (out / CHECKPOINTS / tag).is_dir()
    assert parse_tag(tag)[0] == 2 and parse_tag(tag)[2] == summary["global_step"]
    plots = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert {"stage1.png", "stage2.png"} <= set(plots), plots
    assert all((out / "plots" / p).stat().st_size > 1000 for p in plots)
    return rows


def test_documented_command_zero2_both_stages(zero2_run):
    run = zero2_run.check()
    assert run.command[1:5] == ["--num_gpus", "2", "--master_port", run.command[4]]
    assert run.command[5:8] == ["launcher/train.py", "--deepspeed", "ds_configs/zero2.json"]
    rows = check_run_folder(run, global_steps=RESUME_TOTAL_STEPS)
    out = run.output

    # log_every=1: one loss row per optimizer step, stage 1 = steps 1-6, stage 2 = steps 7-18
    loss_steps = {r["global_step"]: r["stage"] for r in rows if r["name"] == "loss"}
    assert loss_steps == {g: 1 if g <= 6 else 2 for g in range(1, RESUME_TOTAL_STEPS + 1)}
    for part in ("loss/i2t", "loss/t2i", "loss/id", "loss/triplet", "loss/i2tce", "acc", "lr"):
        assert any(r["name"] == part for r in rows), part
    # validation every 2 epochs of stage 2 -> after epochs 2 and 4, with per-protocol mAP; best model kept
    val = [r for r in rows if r["name"] == "val/mAP"]
    assert [r["epoch"] for r in val] == [2, 4]
    assert any(r["name"].startswith("val/mAP/") for r in rows)
    assert (out / "best.safetensors").is_file()
    assert (out / "plots" / "validation.png").is_file()

    check_trained_model(out / "model.safetensors")
    _, _, best_meta = load_trained_model(out / "best.safetensors")
    assert "validation" in best_meta

    # the weight decays reach the optimizer: biases and other no-decay parameters at stage2.weight_decay_bias
    from xfd.engine.checkpoint import safe_checkpoint_engine

    optim = safe_checkpoint_engine().load(str(next((out / CHECKPOINTS / latest_tag(out)).glob("*optim_states.pt"))),
                                          map_location="cpu")["optimizer_state_dict"]["base_optimizer_state"]
    decays = {group["name"]: group["weight_decay"] for group in optim["param_groups"]}
    assert decays == {"backbone/decay": 2.5e-4, "backbone/no_decay": 3e-4, "new/decay": 2.5e-4,
                      "new/no_decay": 3e-4}, decays

    # keep_checkpoints=2: the two newest tags survive, `latest` is the final one
    tags = sorted(p.name for p in (out / CHECKPOINTS).iterdir() if p.is_dir())
    assert len(tags) == 2 and tags[-1] == latest_tag(out) == "s2-e0004-g0000018", tags
    # run identity: resolved config, launch record with the command line and the resolved engine JSON
    launches = json.loads((out / "run.json").read_text())["launches"]
    assert len(launches) == 1 and launches[0]["world_size"] == 2 and launches[0]["device"] == "cpu"
    assert "--deepspeed" in launches[0]["command"] and launches[0]["resumed_from"] is None
    resolved = launches[0]["deepspeed_config_resolved"]
    for stage in ("stage1", "stage2"):
        assert resolved[stage]["zero_optimization"]["stage"] == 2 and resolved[stage]["bf16"]["enabled"] is False
        assert resolved[stage]["train_batch_size"] == 16 and resolved[stage]["train_micro_batch_size_per_gpu"] == 8
        assert launches[0]["batches"][stage] == {"global_batch": 16, "micro_batch": 8, "accumulation": 1,
                                                 "world_size": 2, "lr": pytest.approx(
                                                     {"stage1": 3.5e-3, "stage2": 1e-3}[stage])}
    assert "model:" in (out / "config.yaml").read_text()
    assert any((out / "monitor").rglob("*.csv")), "DeepSpeed's CSV monitor wrote nothing"
    # DeepSpeed's CPU all-reduce segments (69 MB a rank in /dev/shm, i.e. RAM) do not outlive the run
    assert not shared_memory_left(run.command)


@pytest.mark.parametrize("ds_config", ["zero1.json", "zero3.json", "zero2_offload.json"])
def test_ds_config_short_run(ds_config, shards, runs_dir):
    out = runs_dir / ds_config.removesuffix(".json")
    run = launch(ds_config, shards, out, SHORT_OVERRIDES).check()
    # stage 1: 48 tracklets / 64 -> 1 step; stage 2: 48 tracklets / 32 -> 2 steps
    rows = check_run_folder(run, global_steps=3)
    assert any(r["name"] == "val/mAP" for r in rows), "validation did not run"
    assert (out / "best.safetensors").is_file()
    check_trained_model(out / "model.safetensors")
    launches = json.loads((out / "run.json").read_text())["launches"]
    stage = {"zero1.json": 1, "zero3.json": 3, "zero2_offload.json": 2}[ds_config]
    assert launches[0]["deepspeed_config_resolved"]["stage2"]["zero_optimization"]["stage"] == stage


def test_bf16_on_two_cpu_ranks_through_both_stages(shards, runs_dir):
    """train.precision=bf16 under ZeRO-2 on gloo ranks: DeepSpeed's CPU accelerator trains bf16 weights, while
    BatchNorm statistics stay float32 (and the necks, heads and losses compute in float32)."""
    out = runs_dir / "bf16"
    run = launch("zero2.json", shards, out, [*SHORT_OVERRIDES, "train.precision=bf16"]).check()
    check_run_folder(run, global_steps=3)
    check_trained_model(out / "model.safetensors", dtype=torch.bfloat16)
    resolved = json.loads((out / "run.json").read_text())["launches"][0]["deepspeed_config_resolved"]
    assert resolved["stage1"]["bf16"] == resolved["stage2"]["bf16"] == {"enabled": True}
    from xfd.engine.checkpoint import safe_checkpoint_engine

    states = safe_checkpoint_engine().load(str(out / CHECKPOINTS / latest_tag(out) / "mp_rank_00_model_states.pt"),
                                           map_location="cpu")["module"]
    assert states["encoder.visual.transformer.resblocks.3.mlp.c_fc.weight"].dtype == torch.bfloat16
    assert states["classifier_proj.weight"].dtype == torch.bfloat16
    for stat in ("running_mean", "running_var"):
        assert states[f"neck_cls.bn.{stat}"].dtype == states[f"neck_proj.bn.{stat}"].dtype == torch.float32


def test_one_rank_trains_the_same_global_batches_and_steps_as_two(zero2_run, shards, runs_dir):
    """`--num_gpus 1` and `--num_gpus 2` on one config: the same global batches, micro-batch x world, the same
    optimizer steps, and stage 1's losses (cached features, world-independent batches) equal step for step."""
    two = zero2_run.check().output
    one = launch("zero2.json", shards, runs_dir / "one-rank", RESUME_OVERRIDES, ranks=1).check().output
    batches = {n: json.loads((out / "run.json").read_text())["launches"][0]["batches"] for n, out in
               (("one", one), ("two", two))}
    for stage in ("stage1", "stage2"):
        assert batches["one"][stage]["global_batch"] == batches["two"][stage]["global_batch"] == 16
        assert batches["one"][stage]["micro_batch"] == 2 * batches["two"][stage]["micro_batch"] == 16
        assert batches["one"][stage]["world_size"] == 1 and batches["two"][stage]["world_size"] == 2
    summaries = [json.loads((out / "summary.json").read_text()) for out in (one, two)]
    assert summaries[0]["global_step"] == summaries[1]["global_step"] == RESUME_TOTAL_STEPS
    rows = [read_scalar_rows(out / "scalars.csv") for out in (one, two)]
    steps = [sorted((r["stage"], r["global_step"]) for r in rs if r["name"] == "loss") for rs in rows]
    assert steps[0] == steps[1]
    stage1 = [{r["global_step"]: r["value"] for r in rs if r["name"] == "loss" and r["stage"] == 1} for rs in rows]
    assert stage1[0].keys() == stage1[1].keys() and len(stage1[0]) == 6
    assert all(abs(stage1[0][g] - stage1[1][g]) <= 1e-4 * abs(stage1[1][g]) for g in stage1[0]), stage1
