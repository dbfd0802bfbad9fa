"""Optimiser parameter groups for selective fine-tuning.

Which parameters train is decided by `XfdReID.set_stage` (requires_grad); this module splits the trainable ones
into at most four groups, each a plain dict any torch optimiser (and DeepSpeed) accepts:

    group             lr                               weight_decay
    backbone/decay    base_lr * backbone_lr_scale      weight_decay
    backbone/no_decay base_lr * backbone_lr_scale      no_decay_weight_decay
    new/decay         base_lr                          weight_decay
    new/no_decay      base_lr                          no_decay_weight_decay

"backbone" = pretrained CLIP visual parameters (the unfrozen blocks, e.g. resblocks.22/.23 of ViT-L/14, at 0.1x
the base LR as in the paper); "new" = prompts, metadata, adapters, poolers, necks, classifiers and the text
context vectors. "no_decay" = biases and other 1-D parameters (norm gains, class embedding) and learned token
tables (positional embedding, PBP prompts, embedding tables, text context vectors), which weight decay would pull
toward zero for no regularisation benefit; their decay defaults to 0 and can be set (the paper's "weight decay
(bias)"). Each group also carries `lr_scale` (its LR relative to base_lr) so an LR schedule can keep the ratios,
and `name`. Frozen parameters are in no group, so the optimiser never holds state for them.
"""

from __future__ import annotations

from typing import Dict, List, Optional

from torch import nn

NO_DECAY_NAME_SUFFIXES = ("positional_embedding", "class_embedding", "prompts.tokens", "prompt_learner.ctx")


def no_decay_parameter_names(model: nn.Module) -> set[str]:
    """Names of parameters that belong in a no-decay group (see the module docstring)."""
    names = set()
    for module_name, module in model.named_modules():
        if isinstance(module, nn.Embedding):
            names.update(f"{module_name}.{n}" if module_name else n for n, _ in module.named_parameters())
    for name, param in model.named_parameters():
        if param.ndim <= 1 or name.endswith(NO_DECAY_NAME_SUFFIXES):
            names.add(name)
    return names


def param_groups(model, base_lr: float, weight_decay: float, no_decay_weight_decay: float = 0.0,
                 backbone_lr_scale: Optional[float] = None) -> List[Dict]:
    """Optimiser parameter groups of `model`'s trainable parameters (an `XfdReID`).

    `backbone_lr_scale` defaults to the model config's `finetune.backbone_lr_scale` (0.1 in the paper)."""
    scale = model.cfg.finetune.backbone_lr_scale if backbone_lr_scale is None else backbone_lr_scale
    if base_lr <= 0 or scale <= 0:
        raise ValueError(f"base_lr and backbone_lr_scale must be > 0, got {base_lr} and {scale}")
    no_decay = no_decay_parameter_names(model)
    buckets: Dict[str, Dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        scope = "backbone" if model.is_backbone_parameter(name) else "new"
        kind = "no_decay" if name in no_decay else "decay"
        key = f"{scope}/{kind}"
        if key not in buckets:
            lr_scale = scale if scope == "backbone" else 1.0
            buckets[key] = {"name": key, "params": [], "lr": base_lr * lr_scale, "lr_scale": lr_scale,
                            "weight_decay": weight_decay if kind == "decay" else no_decay_weight_decay}
        buckets[key]["params"].append(param)
    if not buckets:
        raise ValueError("the model has no trainable parameters (check model.set_stage and model.finetune)")
    order = ["backbone/decay", "backbone/no_decay", "new/decay", "new/no_decay"]
    return [buckets[k] for k in order if k in buckets]
