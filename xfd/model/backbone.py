"""The CLIP backbone: build an open_clip CLIP at the ReID input size and load local pretrained weights into it.

`build_clip(cfg)` creates the open_clip architecture (`ViT-L-14`, `ViT-B-16`, or a JSON config such as the packaged
`clip-tiny.json`) at `cfg.image_size` (256x128 -> an 18x9 grid for patch 14, 16x8 for patch 16; as in the paper, the
stride-14 patch convolution leaves the last 4 rows and 2 columns of a 256x128 frame unused) with random
weights, then, if `cfg.pretrained` names a file, loads it with `load_clip_weights`:

1. `xfd.model.weights.read_state_dict` reads the file as data (safetensors / weights-only torch.load / TorchScript
   archive read as a zip of tensors — OpenAI's `ViT-L-14.pt` is such an archive);
2. open_clip's own conversion helpers bring it to the open_clip layout: third-party conversions
   (`convert_state_dict`), logit-scale shape, and `resize_pos_embed`, which bicubically interpolates the visual
   positional embedding from the checkpoint's square grid (16x16 for L/14 at 224) to ours (18x9);
3. keys are compared with the model's; any missing, unexpected or mis-shaped key is an error listing them.

Nothing is downloaded: with no file, the error says where to put the weights.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Dict

import open_clip
import torch
from open_clip.convert import convert_state_dict
from open_clip.model import resize_pos_embed, resize_text_pos_embed

from xfd.config import CONFIG_DIR, BackboneConfig
from xfd.model.weights import OPENAI_EXTRA_KEYS, read_state_dict

log = logging.getLogger(__name__)


class CheckpointMismatchError(RuntimeError):
    """A weights file does not fit the architecture; the message lists the offending keys."""


def _resolve_json(name: str) -> Path | None:
    """The JSON model config `name` refers to, or None when `name` is an open_clip architecture name."""
    if not name.endswith(".json"):
        return None
    for candidate in (Path(name), CONFIG_DIR / name):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"model.backbone.name: open_clip JSON config {name} not found "
                            f"(looked at {Path(name).resolve()} and {CONFIG_DIR / name})")


def resolve_model_name(name: str) -> str:
    """open_clip model name for `name`; JSON config files are registered with open_clip under their stem."""
    json_path = _resolve_json(name)
    if json_path is None:
        if name not in open_clip.list_models():
            raise ValueError(f"model.backbone.name: unknown open_clip architecture {name!r}; use e.g. ViT-L-14, "
                             f"ViT-B-16, or a JSON config file such as clip-tiny.json")
        return name
    arch = json_path.stem
    with open(json_path, encoding="utf-8") as handle:
        wanted = json.load(handle)
    registered = open_clip.get_model_config(arch)
    if registered is None:
        open_clip.add_model_config(json_path)
    elif registered != wanted:
        raise ValueError(f"model.backbone.name: open_clip already has a different config named {arch!r}; "
                         f"rename {json_path}")
    return arch


def missing_weights_message(path: str) -> str:
    return (
        f"model.backbone.pretrained: CLIP weights file {path} not found. This machine is offline and xfd never "
        "downloads weights. Copy OpenAI's ViT-L-14.pt / ViT-B-16.pt (TorchScript archives, as published by OpenAI) "
        "or an open_clip state dict (.safetensors/.bin/.pt) to that path, or point the config at it with "
        "model.backbone.pretrained=/path/to/ViT-L-14.pt; use model.backbone.pretrained=null for random weights.")


class _HideRandomInitWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No pretrained weights loaded")


@contextlib.contextmanager
def quiet_random_init():
    """Hide open_clip's "No pretrained weights loaded" warning: we create CLIPs without weights on purpose and
    load weights ourselves afterwards."""
    hide = _HideRandomInitWarning()
    logging.getLogger().addFilter(hide)  # open_clip logs through the root logger
    try:
        yield
    finally:
        logging.getLogger().removeFilter(hide)


def build_clip(cfg: BackboneConfig) -> open_clip.model.CLIP:
    """open_clip CLIP at `cfg.image_size`, random or with `cfg.pretrained` loaded (visual + text towers)."""
    arch = resolve_model_name(cfg.name)
    if cfg.pretrained is not None and not Path(cfg.pretrained).is_file():
        raise FileNotFoundError(missing_weights_message(cfg.pretrained))
    with quiet_random_init():
        clip = open_clip.create_model(
            arch,
            pretrained=None,
            force_image_size=tuple(cfg.image_size),
            quick_gelu=cfg.quick_gelu,  # set either way (force_quick_gelu could only switch it on)
        )
    if not isinstance(clip, open_clip.model.CLIP) or not isinstance(clip.visual,
                                                                     open_clip.transformer.VisionTransformer):
        raise ValueError(f"model.backbone.name: {cfg.name} is not a CLIP ViT (got {type(clip).__name__} with "
                         f"{type(clip.visual).__name__}); xfd adapts open_clip's VisionTransformer")
    if cfg.pretrained is not None:
        load_clip_weights(clip, cfg.pretrained)
    else:
        log.info("model.backbone.pretrained is null: %s has random weights", cfg.name)
    return clip


def to_open_clip_layout(clip: open_clip.model.CLIP, state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """A checkpoint state dict converted to `clip`'s layout and grid with open_clip's helpers."""
    state = {k: v for k, v in state.items() if k not in OPENAI_EXTRA_KEYS}
    state = convert_state_dict(clip, state)
    if "logit_scale" in state and state["logit_scale"].ndim != clip.logit_scale.ndim:
        state["logit_scale"] = state["logit_scale"].reshape(clip.logit_scale.shape)
    for key in ("visual.positional_embedding", "positional_embedding"):
        if key in state:  # OpenAI's weights are fp16, which CPU bicubic interpolation does not implement
            state[key] = state[key].float()
    if "visual.positional_embedding" in state:
        # open_clip interpolates from a square grid; refuse anything else instead of mis-reshaping.
        tokens = state["visual.positional_embedding"].shape[0] - 1
        side = int(round(tokens ** 0.5))
        if side * side != tokens and tokens != clip.visual.positional_embedding.shape[0] - 1:
            raise CheckpointMismatchError(
                f"visual.positional_embedding has {tokens} patch positions, not a square grid; cannot interpolate")
    resize_pos_embed(state, clip)
    resize_text_pos_embed(state, clip)
    # Non-persistent buffers (e.g. the text causal mask) are rebuilt by the model, never loaded.
    persistent = set(clip.state_dict().keys())
    non_persistent = {name for name, _ in clip.named_buffers()} - persistent
    return {k: v for k, v in state.items() if k not in non_persistent}


def load_clip_weights(clip: open_clip.model.CLIP, path: str | Path) -> None:
    """Load a local CLIP weights file into `clip` (strict: every key must match in name and shape)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(missing_weights_message(str(path)))
    state = to_open_clip_layout(clip, read_state_dict(path))
    expected = clip.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mis_shaped = sorted(f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
                        for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or mis_shaped:
        def show(keys):
            return ", ".join(keys[:20]) + (f" ... (+{len(keys) - 20} more)" if len(keys) > 20 else "")

        raise CheckpointMismatchError(
            f"{path} does not fit this CLIP architecture.\n  missing keys ({len(missing)}): {show(missing)}\n"
            f"  unexpected keys ({len(unexpected)}): {show(unexpected)}\n"
            f"  shape mismatches ({len(mis_shaped)}): {show(mis_shaped)}")
    clip.load_state_dict(state, strict=True)
    log.info("loaded CLIP weights from %s (%d tensors)", path, len(state))
