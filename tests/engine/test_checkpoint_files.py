"""Unreadable checkpoint and model files are errors that name the file and say what to do: a torn optimizer-state
file on --resume points at the previous, intact checkpoint; a model file that is not safetensors says what xfd
expected."""

from __future__ import annotations

import pickle
import shutil
import zipfile

import pytest
import torch
from launching import RESUME_OVERRIDES, launch

from xfd.engine.checkpoint import (
    CHECKPOINTS,
    UnreadableCheckpointFile,
    latest_tag,
    load_model_file,
    load_trained_model,
    parse_tag,
)
from xfd.model.weights import WeightsFormatError, read_state_dict

@pytest.mark.slow
def test_torn_optimizer_state_on_resume_names_the_file_and_the_intact_previous_checkpoint(zero2_run, shards,
                                                                                          tmp_path):
    """The shared ZeRO-2 run (2 CPU ranks) copied, its latest checkpoint's optimizer partition of rank 0 cut in half
    (as a disk fault would leave it): --resume stops naming that file and the intact previous checkpoint. (The
    advice, pointing `latest` at that tag, is the mechanism every resume uses; test_resume.py covers it.)"""
    run = shutil.copytree(zero2_run.check().output, tmp_path / "run")
    folder = run / CHECKPOINTS
    tag = latest_tag(run)
    optimizer_state = folder / tag / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    optimizer_state.write_bytes(optimizer_state.read_bytes()[: optimizer_state.stat().st_size // 2])
    def order(name):  # optimizer step first: the epoch-end tag may share its step with the one before it
        stage, epoch, step = parse_tag(name)
        return step, stage, epoch

    previous = max((p.name for p in folder.iterdir() if p.is_dir() and p.name != tag), key=order)

    failed = launch("zero2.json", shards, run, RESUME_OVERRIDES, resume=True)
    assert failed.returncode not in (0, None)
    message = next((line for line in failed.text.splitlines() if "checkpoint file cannot be read" in line), "")
    assert f"{optimizer_state}: checkpoint file cannot be read, it is torn or damaged (" in message, failed.tail()
    assert "PytorchStreamReader" in message  # torch's own reason comes along, in brackets
    assert f"The previous checkpoint {previous} is intact (every file of it opens)" in message
    assert f"echo {previous} > {folder / 'latest'}" in message and "--resume" in message
    assert latest_tag(run) == tag  # nothing was changed: following the advice is the user's call


def test_a_torn_file_alone_names_itself_and_an_empty_folder_has_no_earlier_checkpoint(tmp_path):
    from xfd.engine.checkpoint import resume_advice, safe_checkpoint_engine

    path = tmp_path / "s2-e0000-g0000004" / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    path.parent.mkdir()
    torch.save({"state": torch.zeros(100)}, path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(UnreadableCheckpointFile, match=rf"^{path}: checkpoint file cannot be read"):
        safe_checkpoint_engine().load(str(path), map_location="cpu")
    assert "no earlier checkpoint" in resume_advice(tmp_path, "s2-e0000-g0000004")


@pytest.mark.parametrize("content", [b"PK\x03\x04" + b"\0" * 64, pickle.dumps({"weights": [1, 2]}), b""])
def test_a_model_file_that_is_not_safetensors_names_the_file_and_what_was_expected(tmp_path, content):
    path = tmp_path / "model.safetensors"
    path.write_bytes(content)
    for read in (load_model_file, load_trained_model):
        with pytest.raises(ValueError) as caught:
            read(path)
        assert str(caught.value).startswith(f"{path}: not a readable safetensors model file (")
        assert "xfd expected a model file written by training" in str(caught.value)
    with pytest.raises(WeightsFormatError, match=rf"^{path}: not a readable safetensors file"):
        read_state_dict(path)


def test_a_zip_that_lost_its_directory_does_not_count_as_intact(tmp_path):
    from xfd.engine.checkpoint import _opens

    good = tmp_path / "a.pt"
    torch.save({"x": torch.ones(3)}, good)
    assert _opens(tmp_path) and zipfile.is_zipfile(good)
    good.write_bytes(good.read_bytes()[:-30])
    assert not _opens(tmp_path)
