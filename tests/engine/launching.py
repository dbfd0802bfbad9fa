"""Launching training exactly as a user would, for the engine tests (imported by conftest and the test modules;
tests/eval's launch test uses `run_launch` for launcher/evaluate.py).

Every launch is `[venv]/bin/deepspeed --num_gpus 2 --master_port PORT launcher/train.py --deepspeed JSON
--config tiny.yaml --data SHARDS --output RUN [--resume] key=value...` from the repository root, with
DS_ACCELERATOR=cpu (two gloo ranks on the CPU). A launch costs ~20-30 s on 2 cores, mostly start-up, so the
tests share launches: the session's `zero2_run` serves the documented-command checks, the resume reference and
the interrupted-checkpoint test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from xfd.cli.demo import free_port

REPO = Path(__file__).resolve().parents[2]
DEEPSPEED = Path(sys.executable).parent / "deepspeed"
LAUNCH_TIMEOUT_S = 400

# Train split: 12 identities x 4 tracklets (48). Stage 1 (global batch 16, 8 a rank): 48 / 16 = 3 steps an epoch;
# stage 2 (global batch 16 = P 4 x K 4, 8 a rank): 48 / 16 = 3 steps an epoch. 2 + 4 epochs = 6 + 12 = 18
# optimizer steps. A checkpoint every 2 steps puts stage 2's first one (global step 8) inside an epoch (epoch 0,
# after its 2nd step), so a resume from it continues mid-epoch (sampler position, augmentation draws, RNG).
RESUME_OVERRIDES = [
    "train.stage1.epochs=2", "train.stage1.batch_size=16",
    "train.stage2.epochs=4", "train.stage2.batch_size=16", "train.instances=4",
    "train.log_every=1", "train.checkpoint_every=2", "train.validate_every=2", "train.keep_checkpoints=2",
    "train.stage2.weight_decay_bias=3e-4",  # a value of its own, to see it reach the optimizer
]
RESUME_TOTAL_STEPS = 18
# Stage 1: 48 tracklets / 64 -> 1 step; stage 2: 48 / 32 (P 8 x K 4) -> 2 steps.
SHORT_OVERRIDES = ["train.stage1.epochs=1", "train.stage2.epochs=1", "train.validate_every=1"]


def launch_env() -> dict:
    env = dict(os.environ)
    env["DS_ACCELERATOR"] = "cpu"
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def train_command(ds_config: str, data: Path, output: Path, overrides: list[str], resume: bool = False,
                  ranks: int = 2, config: str = "tiny.yaml") -> list[str]:
    return [str(DEEPSPEED), "--num_gpus", str(ranks), "--master_port", str(free_port()), "launcher/train.py",
            "--deepspeed", f"ds_configs/{ds_config}", "--config", config, "--data", str(data),
            "--output", str(output), *(["--resume"] if resume else []), *overrides]


def shared_memory_left(command: list[str]) -> list[Path]:
    """DeepSpeed CPU all-reduce segments in /dev/shm that a launch with this command line left behind."""
    port = command[command.index("--master_port") + 1]
    return sorted(Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_*_{port}_*"))


@dataclass
class Launch:
    command: list[str]
    returncode: int | None
    log: Path
    output: Path

    @property
    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.is_file() else ""

    def tail(self, chars: int = 4000) -> str:
        return self.text[-chars:]

    def check(self) -> "Launch":
        assert self.returncode == 0, (f"deepspeed launch failed (rc {self.returncode}): {' '.join(self.command)}\n"
                                      f"--- output tail ---\n{self.tail()}")
        return self


def _log_path(output: Path) -> Path:
    logs = output.parent / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    n = len(list(logs.glob(f"{output.name}-*.log")))
    return logs / f"{output.name}-{n}.log"


def launch(ds_config: str, data: Path, output: Path, overrides: list[str], resume: bool = False,
           kill_when=None, ranks: int = 2, config: str = "tiny.yaml") -> Launch:
    """Run a training launch in its own process group, output to a log file beside the run folder. With
    `kill_when`, SIGKILL the whole group as soon as `kill_when(output)` is true (returncode None: killed)."""
    return run_launch(train_command(ds_config, data, output, overrides, resume, ranks, config), output, kill_when)


def run_launch(command: list[str], output: Path, kill_when=None) -> Launch:
    """Run `command` (a `deepspeed` launch, or any command) from the repository root as `launch` does."""
    log = _log_path(output)
    with open(log, "wb") as handle:
        proc = subprocess.Popen(command, cwd=REPO, env=launch_env(), stdout=handle, stderr=subprocess.STDOUT,
                                start_new_session=True)
        deadline = time.monotonic() + LAUNCH_TIMEOUT_S
        try:
            while proc.poll() is None:
                if kill_when is not None and kill_when(output):
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    return Launch(command, None, log, output)
                if time.monotonic() > deadline:
                    handle.write(f"\n[test] timed out after {LAUNCH_TIMEOUT_S} s\n".encode())
                    break
                time.sleep(0.05)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return Launch(command, proc.returncode, log, output)


def train_in_process(argv: list[str], monkeypatch) -> int:
    """`xfd.cli.train.main(argv)` (what launcher/train.py calls) as a world of one in this process, for checks that
    fail before any training (a launch costs ~20 s of start-up). The environment, working directory, thread count
    and process group are restored on return, not at the test's end: a launch later in the same test inherits
    this process's environment, and a leaked LOCAL_WORLD_SIZE=1 would give its ranks other thread counts (and so
    other float rounding) than the run it is compared with."""
    import torch

    from xfd.cli.train import main

    threads = torch.get_num_threads()
    with monkeypatch.context() as patch:
        for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1",
                           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), **launch_env()}.items():
            patch.setenv(key, value)
        patch.delenv("MKL_CBWR", raising=False)  # start_distributed sets it
        patch.chdir(REPO)
        try:
            return main(argv)
        finally:
            if torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
            import deepspeed.comm.comm as ds_comm

            ds_comm.cdb = None  # DeepSpeed's handle on the destroyed group
            torch.set_num_threads(threads)
