"""model.init_from: a run starts from an earlier run's model file — every fitting tensor loaded, the rest kept,
and the summary says which; a file that fits nothing is an error."""

import pytest
import torch
from safetensors.torch import save_file

from xfd.model import build_model


def test_a_bnneck_model_file_starts_an_instance_norm_model(tmp_path, make_config, make_model):
    source = make_model("head.neck=bnneck", seed=3)
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    torch.manual_seed(0)
    model = build_model(make_config("head.neck=instancenorm", f"init_from={path}"))
    assert "kept as built: neck_cls.weight, neck_proj.weight;" in model.init_summary
    assert "in the file but not used: neck_cls.bn.bias" in model.init_summary
    ours, theirs = model.state_dict(), source.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours if not k.startswith(("neck_cls.", "neck_proj.")))
    assert make_model("head.neck=instancenorm").init_summary is None


def test_a_file_that_fits_nothing_is_an_error(tmp_path, make_config):
    path = tmp_path / "other.safetensors"
    save_file({"something.else": torch.zeros(3)}, str(path))
    with pytest.raises(ValueError, match="holds no tensor that fits this model"):
        build_model(make_config(f"init_from={path}"))
    with pytest.raises(FileNotFoundError, match="model.init_from"):
        build_model(make_config(f"init_from={tmp_path / 'missing.safetensors'}"))
