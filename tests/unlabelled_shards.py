"""Test helper: the challenge's anonymised test split, made the way a user would make it. The query and gallery
tracklet folders of a DetReIDX-layout dataset get meaningless names under a group folder that names no identity,
and `xfd-shard --unlabelled` shards the copy (pid null, `"labelled": false`; frames, camids, platforms and capture
metadata still come from the frame names). Train stays as it is."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from xfd.data.shard import ShardOptions, shard_dataset

SIDES = ("query", "gallery")


def scrambled_copy(source: Path, out: Path, seed: int = 0) -> dict[str, str]:
    """Copy SOURCE to OUT with every `case*/{query,gallery}/<PID>/<tracklet>` folder moved to
    `case*/<side>/anon/<random hex>`; returns {original tracklet folder name: new name}."""
    shutil.copytree(source, out)
    rng = np.random.default_rng(seed)
    renamed: dict[str, str] = {}
    for side_folder in sorted(p for p in out.glob("case*/*") if p.name in SIDES):
        for tracklet in sorted(p for p in side_folder.glob("*/*") if p.is_dir()):
            name = f"t{rng.integers(16 ** 7, 16 ** 8):08x}"
            renamed[tracklet.name] = name
            (side_folder / "anon").mkdir(exist_ok=True)
            tracklet.rename(side_folder / "anon" / name)
        for identity in side_folder.iterdir():
            if identity.name != "anon":
                identity.rmdir()  # now empty: the identity folder is gone
    return renamed


def unlabelled_shards(source: Path, base: Path, seed: int = 0) -> tuple[Path, dict[str, str]]:
    """BASE/anonymous: SOURCE scrambled (`scrambled_copy`) and sharded with `xfd-shard --unlabelled`; with the
    renaming {original tracklet folder name: new name}."""
    renamed = scrambled_copy(source, base / "scrambled", seed)
    shard_dataset(base / "scrambled", base / "anonymous", ShardOptions(unlabelled=True), progress=False)
    return base / "anonymous", renamed
