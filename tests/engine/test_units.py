"""The engine's pure parts, in-process and fast: the DeepSpeed config it builds and what it refuses, the batch
plans (global batch -> micro-batch x accumulation x world), the labels check, the LR schedule, checkpoint tags / `latest` / pruning, the weights-only reader, rank-averaged scalars, the non-finite
policy's message, the checkpoint position and RNG state files."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import pytest
import torch

from xfd.config import TrainConfig, load_config
from xfd.engine.checkpoint import (CHECKPOINTS, LATEST, latest_tag, parse_tag, prune, safe_checkpoint_engine,
                                   tag_for)
from xfd.engine.batching import BatchPlan, BatchSizeError, plan_batch, stage_batch
from xfd.engine.deepspeed_config import (DeepSpeedConfigError, build_deepspeed_config, offloads_optimizer,
                                         read_engine_json, use_bf16, zero_stage)
from xfd.engine.schedule import WarmupCosine, warmup_cosine
from xfd.engine.steps import Position, nonfinite, nonfinite_message, reduced_scalars, restore_rng, save_rng

REPO = Path(__file__).resolve().parents[2]


def engine_json(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "engine.json"
    path.write_text(json.dumps(data))
    return path


def tiny_train(*overrides: str) -> TrainConfig:
    return load_config("tiny.yaml", list(overrides)).train


# ------------------------------------------------------------------------------------------- DeepSpeed config

def plan(global_batch: int = 32, world: int = 2, accumulation: int = 1) -> BatchPlan:
    return BatchPlan(global_batch, world, global_batch // (world * accumulation), accumulation)


def test_owned_keys_are_injected(tmp_path):
    train = tiny_train("train.grad_clip=0.5")
    config = build_deepspeed_config(engine_json(tmp_path, {"zero_optimization": {"stage": 2}}), train,
                                    plan(96, 2, 3), cuda=False)
    assert config["train_micro_batch_size_per_gpu"] == 16
    assert config["gradient_accumulation_steps"] == 3
    assert config["train_batch_size"] == 16 * 3 * 2
    assert config["gradient_clipping"] == 0.5 and isinstance(config["gradient_clipping"], float)
    assert config["bf16"] == {"enabled": False}  # fp32 on CPU
    assert config["zero_optimization"] == {"stage": 2}
    assert "tensorboard" not in config and "csv_monitor" not in config


def test_monitor_sections_point_into_the_run(tmp_path):
    config = build_deepspeed_config(engine_json(tmp_path, {}), tiny_train(), plan(8, 1), cuda=False,
                                    monitor_dir=tmp_path / "monitor", job_name="stage2")
    for section in ("tensorboard", "csv_monitor"):
        assert config[section] == {"enabled": True, "output_path": str(tmp_path / "monitor"), "job_name": "stage2"}


def test_repeating_an_owned_key_with_the_same_value_is_accepted(tmp_path):
    path = engine_json(tmp_path, {"train_batch_size": 32, "gradient_accumulation_steps": 1,
                                  "gradient_clipping": 1.0, "bf16": {"enabled": False}})
    assert build_deepspeed_config(path, tiny_train(), plan(), cuda=False)["train_batch_size"] == 32


@pytest.mark.parametrize("key, value", [("train_batch_size", 64), ("train_micro_batch_size_per_gpu", 4),
                                        ("gradient_accumulation_steps", 2), ("gradient_clipping", 5.0)])
def test_contradicting_owned_key_raises_naming_both_values(tmp_path, key, value):
    path = engine_json(tmp_path, {key: value, "zero_optimization": {"stage": 2}})
    with pytest.raises(DeepSpeedConfigError) as err:
        build_deepspeed_config(path, tiny_train(), plan(), cuda=False, stage="stage 2")
    wanted = {"train_batch_size": "32", "train_micro_batch_size_per_gpu": "16", "gradient_accumulation_steps": "1",
              "gradient_clipping": "1.0"}[key]
    message = str(err.value)
    assert f"{key}={value} contradicts" in message and f"gives {wanted} for stage 2" in message
    assert str(path) in message


@pytest.mark.parametrize("key, value, kind", [("train_batch_size", "32", "str, not an integer"),
                                              ("gradient_accumulation_steps", 1.5, "float, not an integer"),
                                              ("train_micro_batch_size_per_gpu", True, "bool, not an integer"),
                                              ("gradient_clipping", "1.0", "str, not a number")])
def test_mistyped_owned_key_names_the_type_problem(tmp_path, key, value, kind):
    """`"train_batch_size": "32"` used to read "32 contradicts (32)"."""
    path = engine_json(tmp_path, {key: value})
    with pytest.raises(DeepSpeedConfigError) as err:
        build_deepspeed_config(path, tiny_train(), plan(), cuda=False)
    assert f"{key}={value!r} is a {kind}" in str(err.value) and "leave the key out" in str(err.value)


@pytest.mark.parametrize("key", ["optimizer", "scheduler"])
def test_optimizer_and_scheduler_sections_are_refused(tmp_path, key):
    path = engine_json(tmp_path, {key: {"type": "Adam", "params": {"lr": 1e-3}}})
    with pytest.raises(DeepSpeedConfigError, match=f"'{key}' is set by xfd"):
        build_deepspeed_config(path, tiny_train(), plan(), cuda=False)


def test_fp16_is_refused(tmp_path):
    with pytest.raises(DeepSpeedConfigError, match="fp16 is not supported"):
        build_deepspeed_config(engine_json(tmp_path, {"fp16": {"enabled": True}}), tiny_train(), plan(8, 1),
                               cuda=False)


def test_precision_comes_from_the_experiment_and_a_contradicting_json_is_refused(tmp_path, monkeypatch):
    """A bf16 JSON under precision=fp32 used to be silently overridden."""
    on, off = engine_json(tmp_path, {"bf16": {"enabled": True}}), tmp_path / "off.json"
    off.write_text(json.dumps({"bf16": {"enabled": False}}))
    with pytest.raises(DeepSpeedConfigError) as err:
        build_deepspeed_config(on, tiny_train("train.precision=fp32"), plan(8, 1), cuda=False)
    assert "bf16.enabled=true contradicts train.precision=fp32" in str(err.value)
    with pytest.raises(DeepSpeedConfigError, match=r"bf16.enabled=true contradicts train.precision=auto \(fp32 on CPU\)"):
        build_deepspeed_config(on, tiny_train(), plan(8, 1), cuda=False)
    with pytest.raises(DeepSpeedConfigError, match="bf16.enabled=false contradicts train.precision=bf16"):
        build_deepspeed_config(off, tiny_train("train.precision=bf16"), plan(8, 1), cuda=False)
    assert build_deepspeed_config(on, tiny_train("train.precision=bf16"), plan(8, 1), cuda=False)["bf16"] == {
        "enabled": True}
    bad = engine_json(tmp_path, {"bf16": {"enabled": "yes"}})
    with pytest.raises(DeepSpeedConfigError, match="enabled.*true/false"):
        build_deepspeed_config(bad, tiny_train(), plan(8, 1), cuda=False)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    plain = engine_json(tmp_path, {})
    assert build_deepspeed_config(plain, tiny_train(), plan(8, 1), cuda=True)["bf16"]["enabled"] is True
    assert build_deepspeed_config(plain, tiny_train(), plan(8, 1), cuda=False)["bf16"]["enabled"] is False
    assert use_bf16("auto", cuda=False) is False
    assert use_bf16("auto", cuda=True) is True
    assert use_bf16("fp32", cuda=True) is False
    assert use_bf16("bf16", cuda=False) is True  # bf16 on CPU ranks is a real path (tests/engine/test_bf16.py)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert use_bf16("auto", cuda=True) is False  # a GPU without bf16 trains in fp32


def test_unreadable_engine_json_is_named(tmp_path):
    with pytest.raises(DeepSpeedConfigError, match="not found"):
        read_engine_json(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DeepSpeedConfigError, match="not valid JSON"):
        read_engine_json(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(DeepSpeedConfigError, match="top level"):
        read_engine_json(bad)


@pytest.mark.parametrize("name, stage, offload", [("zero1.json", 1, False), ("zero2.json", 2, False),
                                                  ("zero3.json", 3, False), ("zero2_offload.json", 2, True)])
def test_packaged_ds_configs_hold_engine_settings_only(name, stage, offload):
    path = REPO / "ds_configs" / name
    raw = read_engine_json(path)
    assert zero_stage(raw) == stage and offloads_optimizer(raw) is offload
    assert not set(raw) & {"optimizer", "scheduler", "train_batch_size", "train_micro_batch_size_per_gpu",
                           "gradient_accumulation_steps", "gradient_clipping", "fp16", "bf16"}
    if name == "zero2.json":
        assert raw["zero_optimization"]["overlap_comm"] and raw["zero_optimization"]["contiguous_gradients"]
    config = build_deepspeed_config(path, tiny_train(), plan(), cuda=False)
    assert config["train_batch_size"] == 32


# ----------------------------------------------------------------------------------------------- batch plans

@pytest.mark.parametrize("world, micro", [(1, 24), (2, 12), (3, 8), (4, 6), (6, 4), (8, 3), (12, 2), (24, 1)])
def test_the_paper_batch_is_the_same_on_any_world_that_divides_it(world, micro):
    """Stage 2's 24 = P 6 x K 4 at any world size: micro x world = 24, no accumulation."""
    train = load_config("xfd_vitl14.yaml").train
    assert stage_batch(train, 2, world) == BatchPlan(24, world, micro, 1, group=4)
    if 48 % world == 0:
        assert stage_batch(train, 1, world) == BatchPlan(48, world, 48 // world, 1)


def test_a_world_that_cannot_share_the_batch_is_refused_with_the_nearest_sizes():
    with pytest.raises(BatchSizeError) as err:
        stage_batch(load_config("xfd_vitl14.yaml").train, 2, 5)
    message = str(err.value)
    assert "global batch of 24 tracklets cannot be shared evenly by 5 ranks" in message
    assert "Nearest world sizes that work: 4 or 6" in message and "P 6 x K 4" in message
    with pytest.raises(BatchSizeError, match="by 64 ranks.*Nearest world sizes that work: 48 "):
        stage_batch(load_config("xfd_vitl14.yaml").train, 1, 64)


def test_a_micro_batch_cap_gives_accumulation_with_whole_identities_per_micro_step():
    train = load_config("xfd_vitl14.yaml", ["train.max_micro_batch=4"]).train
    # 24 on 2 ranks = 12 a rank; 4 at most: 3 micro-steps of 8 (2 identities of K = 4), 4 a rank
    assert stage_batch(train, 2, 2) == BatchPlan(24, 2, 4, 3, group=4)
    assert stage_batch(train, 1, 2) == BatchPlan(48, 2, 4, 6)
    # 24 on 1 rank under a cap of 5: 3 micro-steps of 8 would break the cap, 6 of 4 keep identities whole
    assert plan_batch(24, 1, 5, group=4) == BatchPlan(24, 1, 4, 6, group=4)
    # 24 on 8 ranks under a cap of 2: 3 micro-steps of 8 (2 identities), 1 a rank
    assert plan_batch(24, 8, 2, group=4) == BatchPlan(24, 8, 1, 3, group=4)
    # 20 = P 5 x K 4 on 10 ranks: 2 a rank; 1 a rank would need micro-steps of 10, which split identities
    with pytest.raises(BatchSizeError, match="max_micro_batch=1 cannot be met with 10 ranks.*micro-batches of 2 "
                                             r"\(micro-steps must hold whole groups of 4\); the nearest that works is 2"):
        plan_batch(20, 10, 1, group=4)


def test_lr_scaling_is_explicit():
    base = load_config("xfd_vitl14.yaml").train.stage2
    assert base.scaled_lr == base.lr == 1e-4
    linear = load_config("xfd_vitl14.yaml", ["train.stage2.batch_size=96", "train.stage2.lr_scaling=linear",
                                             "train.stage2.reference_batch=24"]).train.stage2
    assert linear.scaled_lr == pytest.approx(4e-4)
    root = load_config("xfd_vitl14.yaml", ["train.stage2.batch_size=96", "train.stage2.lr_scaling=sqrt",
                                           "train.stage2.reference_batch=24"]).train.stage2
    assert root.scaled_lr == pytest.approx(2e-4)
    from xfd.config import ConfigError
    with pytest.raises(ConfigError, match="train.stage2.reference_batch: lr_scaling=linear"):
        load_config("xfd_vitl14.yaml", ["train.stage2.lr_scaling=linear"])


# -------------------------------------------------------------------------------------------------- schedule

def test_warmup_cosine_values():
    f = WarmupCosine(total=20, warmup=5, warmup_factor=0.1, min_factor=0.01)
    assert f(0) == pytest.approx(0.1)
    assert f(5) == pytest.approx(1.0)  # peak at the end of warm-up
    assert f(20) == pytest.approx(0.01) and f(25) == pytest.approx(0.01)  # the minimum at the end, and after
    assert f(5 + 15 / 2) == pytest.approx(0.01 + 0.99 * 0.5)  # half-way down the cosine
    values = [f(s) for s in range(21)]
    assert all(a < b for a, b in zip(values[:5], values[1:6]))  # rising linearly through warm-up
    assert all(a > b for a, b in zip(values[5:20], values[6:21]))  # falling after
    assert values[1] - values[0] == pytest.approx(values[4] - values[3])
    assert WarmupCosine(total=10, warmup=0)(0) == pytest.approx(1.0)
    assert WarmupCosine(total=3, warmup=10, warmup_factor=0.5)(3) == pytest.approx(1.0)  # warm-up capped at total
    with pytest.raises(ValueError):
        WarmupCosine(total=0, warmup=0)


def test_warmup_cosine_scales_every_group_and_resumes_from_its_state():
    def optimizer():
        params = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
        return torch.optim.Adam([{"params": [params[0]], "lr": 1e-4}, {"params": [params[1]], "lr": 1e-3}])

    opt = optimizer()
    scheduler = warmup_cosine(opt, total_steps=10, warmup_steps=2, warmup_factor=0.1, min_factor=0.01)
    lrs = []
    for _ in range(10):
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.step()
        scheduler.step()
    assert lrs[0] == pytest.approx([1e-5, 1e-4]) and lrs[2] == pytest.approx([1e-4, 1e-3])
    assert all(math.isclose(a * 10, b) for a, b in lrs)  # the backbone group's fraction is kept

    resumed_opt = optimizer()
    resumed = warmup_cosine(resumed_opt, total_steps=10, warmup_steps=2, warmup_factor=0.1, min_factor=0.01)
    partial_opt = optimizer()
    partial = warmup_cosine(partial_opt, total_steps=10, warmup_steps=2, warmup_factor=0.1, min_factor=0.01)
    for _ in range(4):
        partial_opt.step()
        partial.step()
    state = pickle.loads(pickle.dumps(partial.state_dict()))
    resumed.load_state_dict(state)
    resumed_opt.load_state_dict(partial_opt.state_dict())
    assert [g["lr"] for g in resumed_opt.param_groups] == pytest.approx(lrs[4])


# ----------------------------------------------------------------------------------------------- checkpoints

def make_tags(folder: Path, tags: list[str], latest: str) -> None:
    for tag in tags:
        (folder / tag).mkdir(parents=True)
        (folder / tag / "mp_rank_00_model_states.pt").write_bytes(b"x")
    (folder / LATEST).write_text(latest + "\n")
    (folder / "zero_to_fp32.py").write_text("# DeepSpeed's helper script\n")


def test_tags_round_trip_and_refuse_strangers():
    assert tag_for(2, 3, 120) == "s2-e0003-g0000120"
    assert parse_tag("s2-e0003-g0000120") == (2, 3, 120)
    for bad in ("global_step120", "s3-e0001-g0000001", "s1-e1-g1", "latest"):
        with pytest.raises(ValueError):
            parse_tag(bad)


def test_latest_tag(tmp_path):
    assert latest_tag(tmp_path) is None  # a fresh run
    folder = tmp_path / CHECKPOINTS
    make_tags(folder, ["s1-e0001-g0000003"], "s1-e0001-g0000003")
    assert latest_tag(tmp_path) == "s1-e0001-g0000003"
    (folder / LATEST).write_text("s2-e0001-g0000009\n")
    with pytest.raises(FileNotFoundError, match="s2-e0001-g0000009"):
        latest_tag(tmp_path)
    (folder / LATEST).write_text("garbage\n")
    with pytest.raises(ValueError):
        latest_tag(tmp_path)


def test_prune_keeps_the_newest_k_and_never_latest(tmp_path):
    folder = tmp_path / CHECKPOINTS
    finished = [tag_for(1, 0, 2), tag_for(1, 1, 3), tag_for(2, 0, 4), tag_for(2, 1, 6), tag_for(2, 1, 8)]
    newer_unfinished = tag_for(2, 2, 10)  # written after `latest`: an interrupted save, not pruned by age
    make_tags(folder, finished + [newer_unfinished], latest=finished[-1])
    doomed = prune(folder, keep=2)
    assert sorted(doomed) == sorted(finished[:3])
    left = sorted(p.name for p in folder.iterdir() if p.is_dir())
    assert left == sorted(finished[-2:] + [newer_unfinished])
    assert (folder / "zero_to_fp32.py").is_file() and (folder / LATEST).read_text().strip() == finished[-1]
    prune(folder, keep=1)
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == sorted([finished[-1], newer_unfinished])
    assert latest_tag(tmp_path) == finished[-1]


class Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):  # unpickling would create the marker file
        return (Path.touch, (self.marker,))


def test_weights_only_reader(tmp_path):
    from deepspeed.runtime.zero.config import ZeroStageEnum

    reader = safe_checkpoint_engine()
    plain = tmp_path / "plain.pt"
    torch.save({"module": {"w": torch.ones(2)}, "ds_version": "x", "zero_stage": ZeroStageEnum.gradients,
                "client": {"xfd_position": Position(stage=2).as_state()}}, plain)
    loaded = reader.load(str(plain), map_location="cpu")
    assert torch.equal(loaded["module"]["w"], torch.ones(2)) and loaded["zero_stage"] == ZeroStageEnum.gradients

    crafted = tmp_path / "mp_rank_00_model_states.pt"
    marker = tmp_path / "code-ran"
    torch.save({"module": {"w": torch.ones(2)}, "extra": Payload(marker)}, crafted)
    with pytest.raises(pickle.UnpicklingError):
        reader.load(str(crafted), map_location="cpu")
    assert not marker.exists()


# ----------------------------------------------------------------------------------------------------- steps

def test_reduced_scalars_on_one_rank():
    scalars = reduced_scalars(torch.tensor(2.5, requires_grad=True) * 1, {"loss/id": torch.tensor([1.5]),
                                                                         "acc": torch.tensor(0.25)}, world_size=1)
    assert scalars == {"loss": 2.5, "loss/id": 1.5, "acc": 0.25}
    assert all(isinstance(v, float) for v in scalars.values())


def test_nonfinite():
    assert not nonfinite({"loss": 1.0, "loss/id": 0.0, "acc": -3.0})
    for bad in (float("nan"), float("inf"), float("-inf")):
        assert nonfinite({"loss": 1.0, "loss/triplet": bad})
    assert not nonfinite({})


def test_nonfinite_message_names_stage_epoch_step_and_batch():
    keys = [f"0001_{i:04d}" for i in range(10)]
    message = nonfinite_message(2, 3, 17, keys, {"loss": float("nan"), "loss/id": 1.0})
    assert "stage 2" in message and "epoch 3" in message and "step 17" in message
    assert all(k in message for k in keys[:8]) and keys[8] not in message and "(10 in all)" in message
    assert "nan" in message and "train.on_nonfinite=skip" in message
    short = nonfinite_message(1, 0, 0, ["label 3", "label 5"], {"loss": float("inf")})
    assert "[label 3, label 5]" in short and "..." not in short


def test_position_round_trip():
    position = Position(stage=2, epoch=3, step=1, global_step=40, micro_steps=80, skipped_nonfinite=1, best_map=12.5)
    state = pickle.loads(pickle.dumps(position.as_state()))
    assert Position.from_state(state) == position
    assert Position.from_state({"stage": 2, "unknown_future_field": 1}) == Position(stage=2)


def test_rng_state_round_trip(tmp_path):
    torch.manual_seed(123)
    save_rng(tmp_path, rank=1)
    first = torch.rand(5)
    torch.rand(7)
    restore_rng(tmp_path, rank=1)
    assert torch.equal(torch.rand(5), first)
    assert (tmp_path / "rng_rank00001.safetensors").is_file()
    restore_rng(tmp_path, rank=0)  # no file for that rank (another world size): left alone, no error


def test_ranks_on_this_node_read_from_either_launcher(monkeypatch):
    from xfd.engine.context import ranks_on_this_node

    for name in ("LOCAL_SIZE", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert ranks_on_this_node(16) == 16  # a plain process group: every rank on this node
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun
    assert ranks_on_this_node(16) == 4
    monkeypatch.setenv("LOCAL_SIZE", "8")  # deepspeed's launcher, which does not set LOCAL_WORLD_SIZE
    assert ranks_on_this_node(16) == 8


def test_run_refuses_a_world_that_cannot_share_either_stage_naming_the_sizes_that_share_both():
    from xfd.engine.train import plan_batches

    cfg = load_config("xfd_vitl14.yaml")
    assert {n: p.micro for n, p in plan_batches(cfg, 4).items()} == {1: 12, 2: 6}
    with pytest.raises(BatchSizeError) as err:
        plan_batches(cfg, 16)  # divides 48 but not 24
    message = str(err.value)
    assert message.startswith("stage 2 (train.stage2.batch_size = P 6 x K 4): a global batch of 24 tracklets cannot "
                              "be shared evenly by 16 ranks")
    assert "World sizes that share both stages' batches (48 and 24): 1, 2, 3, 4, 6, 8, 12, 24" in message
