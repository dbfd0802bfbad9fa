"""Model summary: parameters per component (trainable vs frozen) and FLOPs per tracklet.

    python -m xfd.model.summary --config xfd_vitl14.yaml [--frames 16] [--stage 2] [--set model.temporal.pooling=mean]

The model is built with random weights (`model.backbone.pretrained` is ignored: the structure is what is
summarised). The backbone row is cross-checked against a fresh open_clip visual tower of the same architecture,
so the table shows xfd's parts on top of open_clip's. FLOPs are counted by `torch.utils.flop_counter` (matmuls,
convolutions, attention; 1 multiply-add = 2 FLOPs) on the meta device, so ViT-L/14 costs no compute:
"forward" = one tracklet through the image side, "train step" = forward + backward with the stage's
trainable parameters (frozen blocks skip their weight gradients but still pass gradients down).
"""

from __future__ import annotations

import argparse
import contextlib
from collections import OrderedDict
from typing import Dict, List

import open_clip
import torch
from torch.utils.flop_counter import FlopCounterMode

from xfd.config import load_config
from xfd.model.backbone import quiet_random_init, resolve_model_name
from xfd.model.reid import XfdReID, build_model

# parameter-name prefix -> component row (first match wins)
COMPONENTS = OrderedDict([
    ("encoder.visual.", "backbone (open_clip visual)"),
    ("encoder.prompts.", "PBP prompts"),
    ("encoder.meta_", "metadata embeddings"),
    ("encoder.ifa.", "IFA adapters"),
    ("encoder.cfaa.", "CFAA adapters"),
    ("pool_", "temporal pooling"),
    ("neck_", "necks"),
    ("classifier_", "ID classifiers"),
    ("text.prompt_learner.", "text prompt learner"),
    ("text.encoder.", "text encoder"),
])


def component_of(name: str) -> str:
    for prefix, component in COMPONENTS.items():
        if name.startswith(prefix):
            return component
    return "other"


def parameter_table(model: torch.nn.Module) -> Dict[str, Dict[str, int]]:
    """{component: {"params", "trainable", "frozen"}} in COMPONENTS order (absent components omitted)."""
    rows: Dict[str, Dict[str, int]] = {c: {"params": 0, "trainable": 0, "frozen": 0} for c in COMPONENTS.values()}
    rows["other"] = {"params": 0, "trainable": 0, "frozen": 0}
    for name, param in model.named_parameters():
        row = rows[component_of(name)]
        row["params"] += param.numel()
        row["trainable" if param.requires_grad else "frozen"] += param.numel()
    return {k: v for k, v in rows.items() if v["params"]}


@contextlib.contextmanager
def _visible_attention():
    """Disable nn.MultiheadAttention's fused inference path, whose kernel the FLOP counter cannot see."""
    previous = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(previous)


def _dummy_inputs(model: XfdReID, batch: int, num_frames: int, device):
    h, w = model.cfg.backbone.image_size
    frames = torch.zeros(batch, num_frames, 3, h, w, device=device)
    platform = torch.ones(batch, dtype=torch.long, device=device)
    meta = torch.zeros(batch, 3, dtype=torch.long, device=device)
    return frames, platform, meta


def forward_flops(model: XfdReID, num_frames: int) -> int:
    """FLOPs of one tracklet of `num_frames` frames through the image side (eval mode, no grad)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), _visible_attention(), FlopCounterMode(display=False) as counter:
            model(*_dummy_inputs(model, 1, num_frames, device))
    finally:
        model.train(was_training)
    return counter.get_total_flops()


def train_step_flops(model: XfdReID, num_frames: int, batch: int = 2) -> int:
    """FLOPs per tracklet of forward + backward in train mode with the current trainable parameters."""
    device = next(model.parameters()).device
    was_training = model.training
    model.train()
    try:
        with _visible_attention(), FlopCounterMode(display=False) as counter:
            out = model(*_dummy_inputs(model, batch, num_frames, device))
            loss = sum(l.sum() for l in out.logits) + sum(f.sum() for f in out.features)
            loss.backward()
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return counter.get_total_flops() // batch


def reference_visual_params(model: XfdReID) -> int:
    """Parameter count of a fresh open_clip visual tower of the same architecture (built on the meta device)."""
    bb = model.cfg.backbone
    with torch.device("meta"), quiet_random_init():
        clip = open_clip.create_model(resolve_model_name(bb.name), pretrained=None,
                                      force_image_size=tuple(bb.image_size), quick_gelu=bb.quick_gelu,
                                      device="meta")
    return sum(p.numel() for p in clip.visual.parameters())


def _m(n: int) -> str:
    return f"{n / 1e6:10.3f}M"


def format_summary(model: XfdReID, num_frames: int, include_train_step: bool = True) -> str:
    """The summary text. Moves `model` to the meta device to count FLOPs (its weights are discarded)."""
    rows = parameter_table(model)
    reference = reference_visual_params(model)
    backbone = rows["backbone (open_clip visual)"]["params"]
    lines: List[str] = []
    bb = model.cfg.backbone
    enc = model.encoder
    grid = enc.visual.grid_size
    lines.append(f"xfd model: {bb.name} at {bb.image_size[0]}x{bb.image_size[1]} ({grid[0]}x{grid[1]} patches + CLS), "
                 f"width {enc.width}, embed {enc.output_dim}, {enc.depth} blocks, stage {model.stage}, "
                 f"trainable blocks {model.trainable_blocks if model.cfg.finetune.freeze_backbone else 'all'}")
    lines.append("")
    lines.append(f"{'component':32s}{'params':>12s}{'trainable':>12s}{'frozen':>12s}")
    total = {"params": 0, "trainable": 0, "frozen": 0}
    for component, row in rows.items():
        lines.append(f"{component:32s}{_m(row['params']):>12s}{_m(row['trainable']):>12s}{_m(row['frozen']):>12s}")
        for k in total:
            total[k] += row[k]
    lines.append(f"{'total':32s}{_m(total['params']):>12s}{_m(total['trainable']):>12s}{_m(total['frozen']):>12s}")
    lines.append("")
    added_image_side = sum(r["params"] for c, r in rows.items()
                           if not c.startswith("text") and c != "backbone (open_clip visual)")
    status = "matches" if reference == backbone else "DIFFERS FROM"
    lines.append(f"open_clip {bb.name} visual tower alone: {reference / 1e6:.3f}M params ({status} the backbone row); "
                 f"xfd adds {added_image_side / 1e6:.3f}M on the image side")
    model.to("meta")
    fwd = forward_flops(model, num_frames)
    lines.append(f"forward FLOPs per tracklet of {num_frames} frames: {fwd / 1e9:.2f} GFLOP "
                 f"({fwd / num_frames / 1e9:.2f} GFLOP per frame)")
    if include_train_step:
        step = train_step_flops(model, num_frames)
        lines.append(f"train-step FLOPs (forward + backward) per tracklet: {step / 1e9:.2f} GFLOP")
    return "\n".join(lines)


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="experiment YAML (path or packaged name, e.g. tiny.yaml)")
    parser.add_argument("--frames", type=int, default=16, help="frames per tracklet for the FLOP count")
    parser.add_argument("--stage", type=int, default=2, choices=(1, 2), help="training stage layout")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, list(args.set) + ["model.backbone.pretrained=null"])
    model = build_model(cfg)
    model.set_stage(args.stage)
    print(format_summary(model, args.frames))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
