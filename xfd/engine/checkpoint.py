"""Checkpoints: DeepSpeed engine states every N steps and at epoch ends, an atomic `latest` pointer, pruning,
safe loading, and the consolidated model file (safetensors) that evaluation reads.

Layout of a run folder:

    RUN/checkpoints/s2-e0003-g0000120/   DeepSpeed's files for that tag (model, optimiser partitions, client state)
    RUN/checkpoints/latest               the tag of the last *complete* checkpoint (written after every rank saved)
    RUN/text_features.safetensors        stage 1's result: the text branch and every identity's text feature
    RUN/model.safetensors, best.safetensors   consolidated model files (fp32) + metadata

A checkpoint counts only once `latest` names it: a write interrupted part-way leaves the previous `latest`, and
with it the previous checkpoint, in force. Loading never unpickles code: DeepSpeed's files are read with
`torch.load(weights_only=True)`, allowing only the handful of plain DeepSpeed data classes its checkpoints hold.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from xfd.atomic import write_bytes_atomic

CHECKPOINTS = "checkpoints"
LATEST = "latest"
_TAG = re.compile(r"^s(?P<stage>[12])-e(?P<epoch>\d{4})-g(?P<step>\d{7})$")


def tag_for(stage: int, epoch: int, global_step: int) -> str:
    """`s2-e0003-g0000120`: stage, epochs completed in that stage when saved, optimizer steps of the run."""
    return f"s{stage}-e{epoch:04d}-g{global_step:07d}"


def parse_tag(tag: str) -> tuple[int, int, int]:
    match = _TAG.match(tag)
    if not match:
        raise ValueError(f"not an xfd checkpoint tag: {tag!r}")
    return int(match["stage"]), int(match["epoch"]), int(match["step"])


def _deepspeed_data_classes() -> list:
    """The plain data classes DeepSpeed pickles into its checkpoints (no code runs when they are restored)."""
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, ZeroStageEnum, fragment_address]


class UnreadableCheckpointFile(RuntimeError):
    """A file of a checkpoint cannot be read (cut short by a crash or damaged since); `advice` says what to do."""

    def __init__(self, path: str | Path, reason: str, advice: str = ""):
        self.path, self.reason, self.advice = str(path), reason, advice
        super().__init__(f"{path}: checkpoint file cannot be read, it is torn or damaged ({reason})"
                         + (f". {advice}" if advice else ""))


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def safe_checkpoint_engine(config_params=None):
    """DeepSpeed's torch checkpoint engine with `torch.load(weights_only=True)` and an explicit allow-list."""
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

    class WeightsOnlyCheckpointEngine(TorchCheckpointEngine):
        def load(self, path: str, map_location=None):
            try:
                with torch.serialization.safe_globals(_deepspeed_data_classes()):
                    return torch.load(path, map_location=map_location, weights_only=True)
            except (RuntimeError, EOFError, OSError) as error:  # a torn zip: "PytorchStreamReader failed ..."
                raise UnreadableCheckpointFile(path, _first_line(error)) from None

    return WeightsOnlyCheckpointEngine(config_params)


def install_safe_loading(engine) -> None:
    """Replace the engine's checkpoint reader (only the plain torch one; others are left alone and say so)."""
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

    if type(engine.checkpoint_engine) is not TorchCheckpointEngine:
        raise RuntimeError(f"unexpected DeepSpeed checkpoint engine {type(engine.checkpoint_engine).__name__}: "
                           "xfd only loads checkpoints through a weights-only reader")
    engine.checkpoint_engine = safe_checkpoint_engine(engine._config)


def latest_tag(run_dir: str | Path) -> str | None:
    """The tag `latest` names, or None for a fresh run. A pointer to a missing folder is an error."""
    pointer = Path(run_dir) / CHECKPOINTS / LATEST
    if not pointer.is_file():
        return None
    tag = pointer.read_text().strip()
    parse_tag(tag)
    if not (pointer.parent / tag).is_dir():
        raise FileNotFoundError(f"{pointer} names checkpoint {tag!r}, which does not exist")
    return tag


def save_checkpoint(engine, run_dir: str | Path, tag: str, client_state: dict, keep: int, rank: int,
                    barrier) -> None:
    """Every rank writes its part; after a barrier rank 0 points `latest` at the tag and prunes old tags."""
    from xfd.engine.steps import save_rng

    folder = Path(run_dir) / CHECKPOINTS
    engine.save_checkpoint(str(folder), tag=tag, client_state=client_state, save_latest=False)
    save_rng(folder / tag, rank)
    barrier()
    if rank == 0:
        write_bytes_atomic(folder / LATEST, (tag + "\n").encode())
        prune(folder, keep)
    barrier()


def prune(folder: Path, keep: int) -> list[str]:
    """Delete all but the newest `keep` complete tags (and unfinished ones older than `latest`)."""
    current = (folder / LATEST).read_text().strip()
    current_step = parse_tag(current)[2]
    tags = []
    for path in folder.iterdir():
        try:
            tags.append((parse_tag(path.name)[2], path.name))
        except ValueError:
            continue
    finished = sorted(t for t in tags if t[0] <= current_step)
    doomed = [name for _, name in finished[:-keep]] if len(finished) > keep else []
    for name in doomed:
        if name != current:
            shutil.rmtree(folder / name, ignore_errors=True)
    return doomed


def _opens(folder: Path) -> bool:
    """Every torch file of a checkpoint folder ends in a complete zip directory (what a torn write lacks)."""
    import zipfile

    files = sorted(folder.glob("*.pt"))
    try:
        for path in files:
            zipfile.ZipFile(path).close()
    except (OSError, zipfile.BadZipFile):
        return False
    return bool(files)


def resume_advice(folder: Path, tag: str) -> str:
    """What to do when checkpoint `tag` in `folder` cannot be read: resume from the previous one, if any."""
    def order(name: str) -> tuple[int, int, int]:  # optimizer step, then stage and epoch (two tags may share a step)
        stage, epoch, step = parse_tag(name)
        return step, stage, epoch

    earlier = sorted((order(p.name), p.name) for p in folder.iterdir() if _TAG.match(p.name)
                     and order(p.name) < order(tag))
    if not earlier:
        return (f"There is no earlier checkpoint in {folder}: start a new run (a new --output, without --resume)")
    previous = earlier[-1][1]
    state = "is intact (every file of it opens)" if _opens(folder / previous) else "is there"
    return (f"The previous checkpoint {previous} {state}: to resume from it, point {folder / LATEST} at it "
            f"(echo {previous} > {folder / LATEST}) and run the same command again with --resume")


def load_checkpoint(engine, run_dir: str | Path, tag: str, rank: int) -> dict:
    """Restore model, optimiser, LR scheduler and this rank's RNG from `tag`; returns the client state. A file
    that cannot be read is an UnreadableCheckpointFile naming it, saying how to resume from the previous one."""
    from safetensors import SafetensorError

    from xfd.engine.steps import restore_rng, rng_file

    folder = Path(run_dir) / CHECKPOINTS
    try:
        try:
            restore_rng(folder / tag, rank)
        except SafetensorError as error:
            raise UnreadableCheckpointFile(rng_file(folder / tag, rank), _first_line(error)) from None
        path, client = engine.load_checkpoint(str(folder), tag=tag, load_optimizer_states=True,
                                              load_lr_scheduler_states=True)
    except UnreadableCheckpointFile as error:
        raise UnreadableCheckpointFile(error.path, error.reason, resume_advice(folder, tag)) from None
    if path is None:
        raise RuntimeError(f"DeepSpeed could not load checkpoint {tag} from {Path(run_dir) / CHECKPOINTS}")
    return client


# ----------------------------------------------------------------------------------------------- model files

def full_state_dict(module: torch.nn.Module, zero3: bool) -> dict[str, torch.Tensor]:
    """fp32 CPU copies of every parameter and buffer; under ZeRO-3 the partitions are gathered first."""
    if zero3:
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
            return {k: v.detach().float().cpu().clone() if v.is_floating_point() else v.detach().cpu().clone()
                    for k, v in module.state_dict().items()}
    return {k: v.detach().float().cpu().clone() if v.is_floating_point() else v.detach().cpu().clone()
            for k, v in module.state_dict().items()}


def save_model_file(path: str | Path, state: dict[str, torch.Tensor], metadata: dict) -> None:
    """A safetensors file (atomic), with `metadata` (config YAML, stage, epoch, ...) as JSON strings."""
    tensors = {k: v.contiguous() for k, v in state.items()}
    text_meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    write_bytes_atomic(path, save(tensors, metadata=text_meta))


def load_model_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, metadata) of a model file; safetensors holds only tensors, so nothing executes."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file not found")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        return load_file(str(path)), metadata
    except SafetensorError as error:
        raise ValueError(f"{path}: not a readable safetensors model file ({_first_line(error)}); xfd expected a "
                         "model file written by training (RUN/model.safetensors or RUN/best.safetensors: a "
                         "safetensors file with the config embedded)") from None


def load_trained_model(path: str | Path, device: str | torch.device = "cpu"):
    """(model, experiment config, metadata) from a model file written by training. The model is built without its
    pretrained weights or `init_from` file (the model file holds every weight), and loading is strict."""
    import dataclasses

    import yaml

    from xfd.config import config_from_dict
    from xfd.model import build_model

    state, metadata = load_model_file(path)
    if "config" not in metadata:
        raise ValueError(f"{path}: not an xfd model file (no embedded config)")
    cfg = config_from_dict(yaml.safe_load(metadata["config"]))
    backbone = dataclasses.replace(cfg.model.backbone, pretrained=None)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, backbone=backbone, init_from=None))
    model = build_model(cfg.model)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not fit the embedded config: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    return model.to(device).eval(), cfg, metadata
