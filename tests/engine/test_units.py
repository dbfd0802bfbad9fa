"""The engine's pure parts, in-process and fast: the DeepSpeed config it builds, the global-batch check, the LR
schedule, checkpoint tags / `latest` / pruning, the weights-only reader, rank-averaged scalars, the non-finite
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
from xfd.engine.deepspeed_config import (DeepSpeedConfigError, build_deepspeed_config, check_global_batch,
                                         offloads_optimizer, read_engine_json, use_bf16, zero_stage)
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

def test_owned_keys_are_injected(tmp_path):
    train = tiny_train("train.gradient_accumulation=3", "train.grad_clip=0.5")
    config = build_deepspeed_config(engine_json(tmp_path, {"zero_optimization": {"stage": 2}}), train,
                                    micro_batch=16, world_size=2, cuda=False)
    assert config["train_micro_batch_size_per_gpu"] == 16
    assert config["gradient_accumulation_steps"] == 3
    assert config["train_batch_size"] == 16 * 3 * 2
    assert config["gradient_clipping"] == 0.5 and isinstance(config["gradient_clipping"], float)
    assert config["bf16"] == {"enabled": False}  # fp32 on CPU
    assert config["zero_optimization"] == {"stage": 2}
    assert "tensorboard" not in config and "csv_monitor" not in config


def test_monitor_sections_point_into_the_run(tmp_path):
    config = build_deepspeed_config(engine_json(tmp_path, {}), tiny_train(), micro_batch=8, world_size=1,
                                    cuda=False, monitor_dir=tmp_path / "monitor", job_name="stage2")
    for section in ("tensorboard", "csv_monitor"):
        assert config[section] == {"enabled": True, "output_path": str(tmp_path / "monitor"), "job_name": "stage2"}


def test_repeating_an_owned_key_with_the_same_value_is_accepted(tmp_path):
    path = engine_json(tmp_path, {"train_batch_size": 32, "gradient_accumulation_steps": 1,
                                  "gradient_clipping": 1.0})
    assert build_deepspeed_config(path, tiny_train(), micro_batch=16, world_size=2, cuda=False)["train_batch_size"] == 32


@pytest.mark.parametrize("key, value", [("train_batch_size", 64), ("train_micro_batch_size_per_gpu", 4),
                                        ("gradient_accumulation_steps", 2), ("gradient_clipping", 5.0)])
def test_contradicting_owned_key_raises_naming_it(tmp_path, key, value):
    path = engine_json(tmp_path, {key: value, "zero_optimization": {"stage": 2}})
    with pytest.raises(DeepSpeedConfigError) as err:
        build_deepspeed_config(path, tiny_train(), micro_batch=16, world_size=2, cuda=False)
    assert key in str(err.value) and str(path) in str(err.value) and str(value) in str(err.value)


@pytest.mark.parametrize("key", ["optimizer", "scheduler"])
def test_optimizer_and_scheduler_sections_are_refused(tmp_path, key):
    path = engine_json(tmp_path, {key: {"type": "Adam", "params": {"lr": 1e-3}}})
    with pytest.raises(DeepSpeedConfigError, match=f"'{key}' is set by xfd"):
        build_deepspeed_config(path, tiny_train(), micro_batch=16, world_size=2, cuda=False)


def test_fp16_is_refused(tmp_path):
    with pytest.raises(DeepSpeedConfigError, match="fp16"):
        build_deepspeed_config(engine_json(tmp_path, {"fp16": {"enabled": True}}), tiny_train(), micro_batch=16,
                               world_size=1, cuda=False)


def test_bf16_only_with_cuda(tmp_path, monkeypatch):
    path = engine_json(tmp_path, {"bf16": {"enabled": True}})  # the JSON cannot switch it on by itself
    assert build_deepspeed_config(path, tiny_train(), micro_batch=8, world_size=1, cuda=False)["bf16"]["enabled"] is False
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert build_deepspeed_config(path, tiny_train(), micro_batch=8, world_size=1, cuda=True)["bf16"]["enabled"] is True
    assert use_bf16("auto", cuda=False) is False
    assert use_bf16("auto", cuda=True) is True
    assert use_bf16("fp32", cuda=True) is False
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
    config = build_deepspeed_config(path, tiny_train(), micro_batch=16, world_size=2, cuda=False)
    assert config["train_batch_size"] == 32


def test_check_global_batch():
    assert check_global_batch(tiny_train(), world_size=2) == 4 * 4 * 1 * 2
    assert check_global_batch(tiny_train("train.gradient_accumulation=2", "train.global_batch=64"), 2) == 64
    with pytest.raises(DeepSpeedConfigError) as err:
        check_global_batch(tiny_train("train.global_batch=48"), world_size=2)
    message = str(err.value)
    assert "train.global_batch=48" in message and "world 2" in message and "= 32" in message


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
