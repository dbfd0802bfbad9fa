"""Test helper: an unlabelled (anonymised) copy of a shard root, as the challenge's test split looks to xfd.

Real shards written by xfd-shard are rewritten sample by sample: each query and gallery tracklet gets a scrambled
folder name (also its sample key; the samples are re-sorted by it, as xfd-shard orders them), its JSON pid and
label become null, its `source` loses the identity folder, and the split's manifest and its dataset.json entry
carry `"labelled": false` — the representation agreed for xfd-shard's unlabelled splits (frames, camids,
platforms and capture metadata stay). Train and val splits are copied unchanged.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np

SIDES = ("query", "gallery")


def _samples(path: Path) -> list[tuple[str, dict, list[bytes]]]:
    """(key, metadata, frames in order) of every sample of one shard."""
    members: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tar:
        for info in tar:
            key, _, extension = info.name.partition(".")
            members.setdefault(key, {})[extension] = tar.extractfile(info).read()
    return [(key, json.loads(m.pop("json")), [m[ext] for ext in sorted(m)]) for key, m in members.items()]


def _tar(samples: list[tuple[str, dict, list[bytes]]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for key, meta, frames in samples:
            members = [(f"{key}.json", json.dumps(meta, sort_keys=True, separators=(",", ":")).encode())]
            members += [(f"{key}.{i:04d}.jpg", data) for i, data in enumerate(frames)]
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def anonymise(root: Path, out: Path, seed: int = 0) -> dict[str, str]:
    """Copy the shard root ROOT to OUT with every query/gallery split unlabelled; returns {old key: new name}."""
    shutil.copytree(root, out)
    rng = np.random.default_rng(seed)
    index = json.loads((out / "dataset.json").read_text())
    renamed: dict[str, str] = {}
    for split in index["splits"]:
        if split.rsplit("/", 1)[-1].rsplit("_", 1)[-1] not in SIDES:
            continue
        folder = out / split
        manifest = json.loads((folder / "manifest.json").read_text())
        sizes = [entry["samples"] for entry in manifest["shards"]]
        samples = [s for entry in manifest["shards"] for s in _samples(folder / entry["name"])]
        for entry in manifest["shards"]:
            (folder / entry["name"]).unlink()
        fresh = []
        for key, meta, frames in samples:
            name = f"t{rng.integers(16 ** 7, 16 ** 8):08x}"  # a folder name that says nothing
            renamed[key] = name
            meta.update(key=name, tracklet=name, pid=None, label=None, source=f"{split}/{name}")
            fresh.append((name, meta, frames))
        fresh.sort(key=lambda s: s[0])
        entries, start = [], 0
        for entry, size in zip(manifest["shards"], sizes):
            chunk = fresh[start:start + size]
            start += size
            data = _tar(chunk)
            (folder / entry["name"]).write_bytes(data)
            entries.append(dict(entry, sha256=hashlib.sha256(data).hexdigest(), bytes=len(data),
                                keys=[s[0] for s in chunk], pids=[None] * len(chunk),
                                camids=[s[1]["camid"] for s in chunk], frame_counts=[len(s[2]) for s in chunk]))
        manifest.update(shards=entries, labelled=False, identities=[])
        manifest["totals"]["identities"] = 0
        (folder / "manifest.json").write_text(json.dumps(manifest))
        index["splits"][split].update(labelled=False, identities=0)
    (out / "dataset.json").write_text(json.dumps(index))
    return renamed
