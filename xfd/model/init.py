"""Start a model from an earlier xfd run's model file (`model.init_from`), as one starts from pretrained weights.

Every tensor of the file whose name and shape fit the new model is copied over the model as built (after its CLIP
weights, `model.backbone.pretrained`); what does not fit — another neck, another number of identities — keeps its
fresh initialisation. The summary says which, so a file that does not fit is never taken for one that does; a file
with nothing in common with the model is an error. Model files are safetensors: loading runs no code.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file


def initialise_from(model: torch.nn.Module, path: str | Path) -> str:
    """Load the fitting tensors of the model file at `path` into `model`; returns a one-paragraph summary."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model.init_from: {path} not found (an xfd model file: RUN/model.safetensors)")
    source = load_file(str(path))
    target = model.state_dict()
    fitting = {k: v for k, v in source.items() if k in target and tuple(v.shape) == tuple(target[k].shape)}
    if not fitting:
        raise ValueError(f"model.init_from: {path} holds no tensor that fits this model (by name and shape); is it "
                         "an xfd model file of the same architecture?")
    with torch.no_grad():
        for name, value in fitting.items():
            target[name].copy_(value.to(target[name].dtype))
    kept = sorted(k for k in target if k not in fitting)
    unused = sorted(k for k in source if k not in fitting)

    def listed(names: list[str]) -> str:
        return ", ".join(names[:6]) + (f", ... ({len(names)} in all)" if len(names) > 6 else "") if names else "none"

    return (f"initialised from {path}: {len(fitting)} of the model's {len(target)} tensors loaded; kept as built: "
            f"{listed(kept)}; in the file but not used: {listed(unused)}")
