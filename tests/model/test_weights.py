"""xfd.model.weights: every supported file format reads as data, and nothing stored in a file is executed."""

import os
import pickle
import zipfile

import open_clip
import pytest
import torch

from xfd.model.backbone import resolve_model_name
from xfd.model.weights import WeightsFormatError, is_torchscript_archive, read_state_dict


@pytest.fixture(scope="module")
def tiny_clip():
    torch.manual_seed(0)
    return open_clip.create_model(resolve_model_name("clip-tiny.json"), pretrained=None).eval()


def _traced(clip, path):
    image = torch.randn(1, 3, 64, 64)
    text = torch.zeros(1, clip.context_length, dtype=torch.long)
    traced = torch.jit.trace_module(clip, {"encode_image": (image,), "encode_text": (text,)}, check_trace=False)
    torch.jit.save(traced, str(path))


def test_torchscript_archive_is_read_as_data_and_matches_jit_state(tiny_clip, tmp_path):
    for kind in ("traced", "scripted"):
        path = tmp_path / f"{kind}.pt"
        if kind == "traced":
            _traced(tiny_clip, path)
        else:
            torch.jit.save(torch.jit.script(tiny_clip), str(path))
        assert is_torchscript_archive(path)
        ours = read_state_dict(path)
        reference = torch.jit.load(str(path)).state_dict()  # trusted here: the test wrote this file itself
        assert set(ours) == set(reference)
        for key, value in reference.items():
            assert ours[key].dtype == value.dtype and torch.equal(ours[key], value), key


def test_plain_state_dicts_and_wrappers(tiny_clip, tmp_path):
    from safetensors.torch import save_file

    state = tiny_clip.state_dict()
    torch.save(state, tmp_path / "plain.pt")
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, tmp_path / "wrapped.pth")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    for name in ("plain.pt", "wrapped.pth", "w.safetensors"):
        loaded = read_state_dict(tmp_path / name)
        assert not is_torchscript_archive(tmp_path / name)
        assert set(loaded) == set(state), name
        assert all(torch.equal(loaded[k], state[k]) for k in state), name


class _Payload:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_pickled_code_in_a_torch_file_is_refused_not_run(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"weight": torch.zeros(2), "evil": _Payload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(WeightsFormatError, match="weights only"):
        read_state_dict(tmp_path / "evil.pt")
    assert not marker.exists()


def test_pickled_code_in_a_torchscript_archive_is_refused_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil_jit.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("evil_jit/data.pkl", pickle.dumps(_Payload(marker), protocol=2))
        archive.writestr("evil_jit/constants.pkl", pickle.dumps((), protocol=2))
        archive.writestr("evil_jit/code/__torch__/x.py", "raise SystemExit")
    assert is_torchscript_archive(path)
    with pytest.raises(WeightsFormatError, match="refusing to load global"):
        read_state_dict(path)
    assert not marker.exists()


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_state_dict(tmp_path / "absent.pt")
    torch.save({"epoch": 3}, tmp_path / "no_tensors.pt")
    with pytest.raises(WeightsFormatError, match="no tensors"):
        read_state_dict(tmp_path / "no_tensors.pt")
