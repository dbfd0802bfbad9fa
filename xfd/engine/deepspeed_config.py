"""The DeepSpeed config a run uses: the engine JSON (ZeRO stage, offload, buckets) + what the experiment owns.

`ds_configs/*.json` hold engine settings only (docs/design.md). Batch sizes, gradient clipping, precision and
monitor paths come from the experiment config and the run folder, and are written into the dict here. A JSON that
sets them differently (or with a value of the wrong type) is refused before any work, naming both values: two
sources of truth for the batch size or the precision would otherwise silently disagree. The batch identity
`train_batch_size = micro x accumulation x world` holds by construction (xfd/engine/batching.py).
"""

from __future__ import annotations

import json
from pathlib import Path

from xfd.config import TrainConfig
from xfd.engine.batching import BatchPlan

# Keys the experiment config owns; an engine JSON may repeat them only with the same value.
OWNED_BY_EXPERIMENT = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                       "gradient_clipping")
# Keys that must not appear at all: the optimiser and LR schedule are built by xfd from the experiment config.
FORBIDDEN = ("optimizer", "scheduler")
# Where each owned value comes from, for the messages.
_SOURCES = {"train_batch_size": "the stage's batch_size (global)",
            "train_micro_batch_size_per_gpu": "the stage's batch_size / (world x accumulation)",
            "gradient_accumulation_steps": "derived from the batch, the world size and train.max_micro_batch",
            "gradient_clipping": "train.grad_clip"}


class DeepSpeedConfigError(ValueError):
    """The engine JSON is unreadable or contradicts the experiment config; the message names file and key."""


def read_engine_json(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise DeepSpeedConfigError(f"{path}: DeepSpeed config not found (the packaged ones are ds_configs/zero1.json, "
                                   "zero2.json, zero3.json, zero2_offload.json)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DeepSpeedConfigError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise DeepSpeedConfigError(f"{path}: top level must be an object")
    return data


def use_bf16(precision: str, cuda: bool) -> bool:
    """`auto`: bf16 on GPUs that support it, fp32 on CPU (CPU bf16 matmuls are slow and gain nothing here)."""
    if precision == "auto":
        if not cuda:
            return False
        import torch

        return torch.cuda.is_bf16_supported()
    return precision == "bf16"


def zero_stage(engine_json: dict) -> int:
    return int(engine_json.get("zero_optimization", {}).get("stage", 0))


def offloads_optimizer(engine_json: dict) -> bool:
    offload = engine_json.get("zero_optimization", {}).get("offload_optimizer") or {}
    return offload.get("device", "none") not in ("none", None)


def _check_owned(path, key: str, value, wanted, stage: str) -> None:
    """An owned key the JSON repeats must have the right type and the experiment's value."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if key == "gradient_clipping" and not number:
        raise DeepSpeedConfigError(f"{path}: {key}={value!r} is a {type(value).__name__}, not a number (the experiment "
                                   f"config sets {wanted} from {_SOURCES[key]}; leave the key out of the JSON)")
    if key != "gradient_clipping" and not (number and float(value).is_integer()):
        raise DeepSpeedConfigError(f"{path}: {key}={value!r} is a {type(value).__name__}, not an integer (the "
                                   f"experiment config sets {wanted} from {_SOURCES[key]}; leave the key out of the "
                                   "JSON)")
    if value != wanted:
        raise DeepSpeedConfigError(
            f"{path}: {key}={value} contradicts the experiment config, which gives {wanted} for {stage} "
            f"({_SOURCES[key]}); batch sizes and clipping are set in the experiment config, leave them out of the JSON")


def _check_precision(path, engine: dict, train: TrainConfig, bf16: bool, cuda: bool) -> None:
    """fp16 is refused; a bf16 section must agree with train.precision as resolved for this device."""
    resolved = f"train.precision={train.precision}" + (
        f" ({'bf16' if bf16 else 'fp32'} on {'this GPU' if cuda else 'CPU'})" if train.precision == "auto" else "")
    for section in ("fp16", "bf16"):
        if section not in engine:
            continue
        block = engine[section]
        if not isinstance(block, dict) or not isinstance(block.get("enabled", False), bool):
            raise DeepSpeedConfigError(f"{path}: {section} must be an object with \"enabled\": true/false, got "
                                       f"{block!r}")
        enabled = block.get("enabled", False)
        if section == "fp16" and enabled:
            raise DeepSpeedConfigError(f"{path}: fp16 is not supported (CLIP fine-tuning is unstable under loss "
                                       f"scaling); precision is {resolved}")
        if section == "bf16" and enabled != bf16:
            raise DeepSpeedConfigError(f"{path}: bf16.enabled={str(enabled).lower()} contradicts {resolved}; "
                                       "precision is set in the experiment config, leave it out of the JSON")


def build_deepspeed_config(path: str | Path, train: TrainConfig, plan: BatchPlan, *, cuda: bool,
                           monitor_dir: str | Path | None = None, job_name: str = "train",
                           stage: str = "this stage") -> dict:
    """The config dict for `deepspeed.initialize` of one stage (stages differ in their batch plans)."""
    engine = read_engine_json(path)
    for key in FORBIDDEN:
        if key in engine:
            raise DeepSpeedConfigError(f"{path}: '{key}' is set by xfd from the experiment config "
                                       f"(train.stage1/stage2); remove it from the engine JSON")
    wanted = {
        "train_micro_batch_size_per_gpu": plan.micro,
        "gradient_accumulation_steps": plan.accumulation,
        "train_batch_size": plan.global_batch,
        "gradient_clipping": float(train.grad_clip),
    }
    for key in OWNED_BY_EXPERIMENT:
        if key in engine:
            _check_owned(path, key, engine[key], wanted[key], stage)
    engine.update(wanted)
    bf16 = use_bf16(train.precision, cuda)
    _check_precision(path, engine, train, bf16, cuda)
    engine["bf16"] = {**engine.get("bf16", {}), "enabled": bf16}
    if monitor_dir is not None:
        for section in ("tensorboard", "csv_monitor"):
            engine[section] = {"enabled": True, "output_path": str(monitor_dir), "job_name": job_name}
    return engine
