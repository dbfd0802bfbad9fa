"""Engine tests: a small synthetic shard set built once per session, and one ZeRO-2 run that several tests share
(a `deepspeed` launch costs ~20-30 s on 2 cores, mostly start-up). Launch helpers: launching.py."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # `launching` for the test modules (tests/ is not a package)

from launching import RESUME_OVERRIDES, Launch, launch  # noqa: E402


@pytest.fixture(scope="session")
def shards(tmp_path_factory) -> Path:
    """xfd-synth (16 train + 4 test identities, 8-16 frames) -> xfd-shard with 4 identities held out as val/."""
    from xfd.cli import shard, synth

    root = tmp_path_factory.mktemp("engine-data")
    assert synth.main([str(root / "raw"), "--ids", "16", "--test-ids", "4", "--min-frames", "8", "--max-frames", "16",
                       "--workers", "1", "--no-progress"]) == 0
    assert shard.main([str(root / "raw"), str(root / "shards"), "--val-ids", "4", "--shard-size", "1",
                       "--workers", "1", "--no-progress"]) == 0
    shutil.rmtree(root / "raw")
    return root / "shards"


@pytest.fixture(scope="session")
def runs_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("engine-runs")


@pytest.fixture(scope="session")
def zero2_run(shards, runs_dir) -> Launch:
    """The documented command (ZeRO-2, both stages), with logging every step and checkpoints every 2 steps:
    the uninterrupted reference of the resume test as well."""
    return launch("zero2.json", shards, runs_dir / "zero2", RESUME_OVERRIDES)
