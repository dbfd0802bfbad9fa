"""xfd-shard --verify: passes on fresh shards, names every kind of damage."""

from __future__ import annotations

import io
import tarfile

import pytest

from xfd.cli.shard import main as shard_main
from xfd.data.shard import ShardOptions, shard_dataset
from xfd.data.verify import verify_dataset


@pytest.fixture
def shards(detreidx_root, tmp_path):
    out = tmp_path / "shards"
    shard_dataset(detreidx_root, out, ShardOptions(shard_samples=2), progress=False)
    return out


def _problems(root):
    return [p for report in verify_dataset(root, progress=False) for p in report.problems]


def test_fresh_shards_verify_and_the_summary_counts_match(shards, capsys):
    assert shard_main(["--verify", str(shards), "--no-progress", "--workers", "2"]) == 0
    output = capsys.readouterr().out
    train_row = next(line for line in output.splitlines() if line.startswith("train "))
    assert train_row.split()[1:5] == ["6", "12", "111", "6"]  # ids, tracklets, frames, shards
    assert "every frame decodes" in output


def test_flipped_byte_fails_the_sha256(shards):
    shard = shards / "train" / "shard-000001.tar"
    data = bytearray(shard.read_bytes())
    data[600] ^= 0x01
    shard.write_bytes(bytes(data))
    assert any("sha256" in p and "shard-000001.tar" in p for p in _problems(shards))


def test_truncated_tar_is_named(shards):
    shard = shards / "train" / "shard-000002.tar"
    shard.write_bytes(shard.read_bytes()[:1500])
    problems = _problems(shards)
    assert any("shard-000002.tar" in p and ("truncated" in p or "differ" in p) for p in problems)


def test_member_with_dotdot_or_absolute_path_is_named(shards):
    shard = shards / "train" / "shard-000000.tar"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in ("/etc/evil.json", "../evil.0000.jpg"):
            info = tarfile.TarInfo(name)
            info.size = 2
            tar.addfile(info, io.BytesIO(b"{}"))
    shard.write_bytes(buffer.getvalue())
    problems = " ".join(_problems(shards))
    assert "absolute member path" in problems and "'..'" in problems


def test_missing_shard_fails_the_cli(shards, capsys):
    (shards / "case3_aerial_to_aerial" / "query" / "shard-000000.tar").unlink()
    assert shard_main(["--verify", str(shards), "--no-progress"]) == 1
    assert "missing" in capsys.readouterr().err
