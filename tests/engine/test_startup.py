"""Start-up: a plain `python launcher/train.py` is a world of one; DeepSpeed's C++ op builds are cached per
installation and announced."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from launching import REPO, launch_env
from xfd.engine import ops

LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                      "MASTER_PORT")


def test_the_extension_cache_is_keyed_by_installation(tmp_path):
    base = dict(prefix="/venvs/a", torch_version="2.4.0", deepspeed_version="0.15.0", cache_root=tmp_path)
    here = ops.extensions_dir(**base)
    assert here.parent == tmp_path / "xfd" / "torch_extensions" and "torch2.4.0-deepspeed0.15.0-py" in here.name
    for change in (dict(prefix="/venvs/b"), dict(torch_version="2.5.0"), dict(deepspeed_version="0.16.0")):
        assert ops.extensions_dir(**{**base, **change}) != here
    assert ops.extensions_dir(**base) == here  # a pure function of the installation
    assert REPO not in ops.extensions_dir().parents  # never inside the checkout


def test_a_user_set_cache_is_kept_else_the_installation_one_is_set(monkeypatch, tmp_path):
    monkeypatch.setenv(ops.EXTENSIONS_VARIABLE, str(tmp_path / "mine"))
    assert ops.use_installation_cache() == tmp_path / "mine"
    monkeypatch.delenv(ops.EXTENSIONS_VARIABLE)
    assert ops.use_installation_cache() == ops.extensions_dir()
    assert os.environ[ops.EXTENSIONS_VARIABLE] == str(ops.extensions_dir())  # what the rank's build reads


def test_a_build_is_announced_only_when_the_op_is_not_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    monkeypatch.setenv(ops.EXTENSIONS_VARIABLE, str(tmp_path))
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    said = []
    assert ops.announce_op_build("ShareMemCommBuilder", "the CPU all-reduce", out=lambda *a, **k: said.append(a[0]))
    assert len(said) == 1 and "building DeepSpeed's deepspeed_shm_comm op" in said[0] and str(tmp_path) in said[0]
    assert "first launch only" in said[0]
    built = tmp_path / "deepspeed_shm_comm" / "deepspeed_shm_comm.so"
    built.parent.mkdir()
    built.write_bytes(b"")  # what torch's JIT loader leaves once the op is built
    assert not ops.announce_op_build("ShareMemCommBuilder", "the CPU all-reduce", out=said.append)
    assert not ops.announce_op_build("NoSuchBuilder", "nothing", out=said.append) and len(said) == 1


def test_plain_python_launch_trains_as_one_process(shards, tmp_path):
    """`python launcher/train.py ...` without the deepspeed launcher: one process, no MPI discovery. The op build
    is announced exactly when this installation's cache did not hold it yet."""
    env = {k: v for k, v in launch_env().items() if k not in LAUNCHER_VARIABLES}
    cache = Path(env[ops.EXTENSIONS_VARIABLE]) if env.get(ops.EXTENSIONS_VARIABLE) else ops.extensions_dir()
    cached_before = (cache / "deepspeed_shm_comm" / "deepspeed_shm_comm.so").is_file()
    run = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "launcher/train.py", "--deepspeed", "ds_configs/zero2.json", "--config", "tiny.yaml",
         "--data", str(shards), "--output", str(run), "train.stage1.epochs=1", "train.stage2.epochs=1",
         "train.validate_every=0"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert "running as a single process" in log and "mpi4py" not in log
    assert ("building DeepSpeed's deepspeed_shm_comm op" in log) == (not cached_before), log[-4000:]
    assert (cache / "deepspeed_shm_comm" / "deepspeed_shm_comm.so").is_file()
    launch = json.loads((run / "run.json").read_text())["launches"][-1]
    assert launch["world_size"] == 1 and launch["device"] == "cpu"
    assert (run / "model.safetensors").is_file()
