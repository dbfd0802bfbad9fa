"""Random access to the tracklets of one shard set, for PK batching.

The evaluation stream (`stream.py`) reads shards front to back; a PK sampler instead asks for *these* K tracklets
of *these* P identities, in any order. `ShardIndex.open` therefore scans every tar's member headers once (names,
data offsets, sizes — never frame bytes), parses each sample's small `<key>.json`, and checks the grouping the
same way the stream does (`parse_tracklet_sample`: safe key, one json, frames only, known format version, frame
count = metadata, bins in range) plus frames numbered 0..n-1, the shard's keys equal to the manifest's and each
pid agreeing with its key and the manifest. Afterwards
`frames(key, indices)` reads just the requested JPEGs with positional reads (`os.pread`), which keep no file
position, so any number of threads may read through the same descriptors at once.
"""

from __future__ import annotations

import os
import tarfile
import threading
from dataclasses import dataclass
from pathlib import Path

from .errors import DataError
from .manifest import check_sample_identity, is_labelled, shard_path
from .stream import complete_manifest, parse_tracklet_sample


@dataclass(frozen=True)
class _Member:
    """Where one member's bytes lie: shard number (manifest order), data offset, size."""

    shard: int
    offset: int
    size: int


def _scan_shard(path: Path, shard: int) -> dict[str, dict[str, _Member]]:
    """key → {extension → member location}, in member order; headers only (the json is read later)."""
    size = path.stat().st_size
    samples: dict[str, dict[str, _Member]] = {}
    try:
        with tarfile.open(path, mode="r:") as tar:
            for info in tar:
                where = f"{path} [{info.name}]"
                if not info.isreg():
                    raise DataError(where, "member is not a regular file")
                if info.offset_data + info.size > size:
                    raise DataError(str(path), f"truncated tar (member {info.name} runs past the end of the file)")
                key, dot, extension = info.name.partition(".")
                if not dot:
                    raise DataError(where, "member name has no extension")
                members = samples.setdefault(key, {})
                if extension in members:
                    raise DataError(where, "member stored twice")
                members[extension] = _Member(shard, info.offset_data, info.size)
    except (tarfile.TarError, EOFError, OSError) as error:
        raise DataError(str(path), f"unreadable or truncated tar ({error})") from None
    return samples


def _read_exact(fd: int, member: _Member, where: str) -> bytes:
    data = os.pread(fd, member.size, member.offset)
    if len(data) != member.size:
        raise DataError(where, f"truncated tar (read {len(data)} of {member.size} bytes)")
    return data


class ShardIndex:
    """Tracklet metadata and per-frame byte ranges of one shard set; `frames()` is thread-safe."""

    def __init__(self, folder: Path, shard_paths: list[Path], keys: list[str], metas: dict[str, dict],
                 frame_members: dict[str, list[_Member]]):
        self.folder = folder
        self.shard_paths = shard_paths
        self.keys = keys  # manifest order
        self._metas = metas
        self._frames = frame_members
        self._fds: dict[int, int] = {}  # shard number → descriptor, opened on first use
        self._lock = threading.Lock()
        self.labelled = True  # False for a split sharded with --unlabelled (pid and label null)

    @classmethod
    def open(cls, folder: str | Path) -> "ShardIndex":
        """Check the manifest, scan every shard's headers and parse every sample's metadata."""
        folder = Path(folder)
        manifest = complete_manifest(folder)  # complete, non-empty, known version, plain shard names
        paths = [shard_path(folder, entry) for entry in manifest["shards"]]
        labelled = is_labelled(manifest)
        keys: list[str] = []
        metas: dict[str, dict] = {}
        frame_members: dict[str, list[_Member]] = {}
        for shard, (path, entry) in enumerate(zip(paths, manifest["shards"])):
            samples = _scan_shard(path, shard)
            if list(samples) != list(entry["keys"]):
                raise DataError(str(path), f"samples {list(samples)[:3]}… differ from the manifest's "
                                           f"{list(entry['keys'])[:3]}… (truncated or replaced shard?)")
            pid_of = dict(zip(entry["keys"], entry["pids"]))
            fd = os.open(path, os.O_RDONLY)
            try:
                for key, members in samples.items():
                    where = f"{path} [{key}]"
                    if key in metas:
                        raise DataError(where, "sample key appears twice in the shard set")
                    raw = {"__key__": key, "__url__": str(path), **members}
                    if "json" in members:
                        raw["json"] = _read_exact(fd, members["json"], where)
                    _, meta, _ = parse_tracklet_sample(raw)  # stream.py's grouping and bins rules
                    check_sample_identity(where, key, meta, pid_of.get(key), labelled)
                    # frames by number (the extension text sorts 10000 before 1001)
                    by_number = {int(ext.split(".")[0]): m for ext, m in members.items() if ext != "json"}
                    if sorted(by_number) != list(range(len(members) - 1)):
                        raise DataError(where, f"frames are not numbered 0..{len(by_number) - 1}: "
                                               f"{sorted(by_number)[:8]}…")
                    keys.append(key)
                    metas[key] = meta
                    frame_members[key] = [by_number[i] for i in range(len(by_number))]
            finally:
                os.close(fd)
        index = cls(folder, paths, keys, metas, frame_members)
        index.labelled = labelled
        return index

    # ------------------------------------------------------------------ metadata

    def meta(self, key: str) -> dict:
        """The sample's `<key>.json` (schema in data_shards/README.md)."""
        return self._metas[key]

    def num_frames(self, key: str) -> int:
        """Frames stored for the tracklet (after the shard tool's --max-frames cap)."""
        return len(self._frames[key])

    def labels_to_keys(self) -> dict[int, list[str]]:
        """Train split: label → its tracklet keys (manifest order). Errors if a sample has no label."""
        if not self.labelled:
            raise DataError(str(self.folder), "split was sharded with --unlabelled (no identities): it cannot be "
                                              "used for training")
        groups: dict[int, list[str]] = {}
        for key in self.keys:
            label = self._metas[key].get("label")
            if label is None:
                raise DataError(f"{self.folder} [{key}]", "sample has no label (not a train split?)")
            groups.setdefault(int(label), []).append(key)
        return dict(sorted(groups.items()))

    def shard_of(self, key: str) -> Path:
        """The shard file holding the tracklet (for error messages)."""
        return self.shard_paths[self._frames[key][0].shard]

    # ------------------------------------------------------------------ bytes

    def _fd(self, shard: int) -> int:
        with self._lock:
            if shard not in self._fds:
                self._fds[shard] = os.open(self.shard_paths[shard], os.O_RDONLY)
            return self._fds[shard]

    def frames(self, key: str, indices: list[int]) -> list[bytes]:
        """The encoded JPEGs of the tracklet's stored frames `indices` (repeats allowed), in that order."""
        members = self._frames[key]
        out = []
        for i in indices:
            if not 0 <= i < len(members):
                raise IndexError(f"{key}: frame {i} outside 0..{len(members) - 1}")
            member = members[i]
            out.append(_read_exact(self._fd(member.shard), member,
                                   f"{self.shard_paths[member.shard]} [{key}] frame {i}"))
        return out

    def close(self) -> None:
        """Close the shard descriptors (reopened on the next read)."""
        with self._lock:
            fds, self._fds = self._fds, {}
        for fd in fds.values():
            os.close(fd)

    def __enter__(self) -> "ShardIndex":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass

    def __getstate__(self) -> dict:
        """Picklable for DataLoader workers: descriptors and the lock are per process."""
        state = self.__dict__.copy()
        state["_fds"], state["_lock"] = {}, None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.keys)
