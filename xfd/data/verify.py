"""`xfd-shard --verify`: re-check every shard of every shard set against its manifest.

For each shard: the sha256 recorded in the manifest, the tar structure (regular files only; flat member names,
no absolute paths or `..`), sample grouping (one `<key>.json` then frames `<key>.0000.jpg …` numbered without
gaps, no key repeated), metadata consistency, and that every frame fully decodes as a JPEG.
"""

from __future__ import annotations

import json
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from ..parallel import worker_results
from .errors import DataError
from .jpeg import check_jpeg_decodes
from .shard import MANIFEST_NAME, sha256_of_file
from .summary import SplitReport

_FRAME_SUFFIX = re.compile(r"^(\d{4,})\.jpg$")


def unsafe_member_reason(name: str) -> str | None:
    """Why a tar member name is not acceptable in a shard (None if it is)."""
    if name.startswith("/"):
        return "absolute member path"
    if ".." in name.split("/"):
        return "member path with '..'"
    if "/" in name:
        return "member path with a folder (shard members are flat)"
    return None


def split_member_name(name: str) -> tuple[str, str]:
    """WebDataset convention: the key is everything before the first dot."""
    key, _, extension = name.partition(".")
    return key, extension


@dataclass
class ShardCheck:
    name: str
    problems: list[str] = field(default_factory=list)
    samples: int = 0
    frames: int = 0
    pids: set = field(default_factory=set)


def _check_sample(shard: str, key: str, members: list[tuple[str, bytes]], check: ShardCheck) -> None:
    where = f"{shard} [{key}]"
    json_members = [data for ext, data in members if ext == "json"]
    frames = []
    for extension, data in members:
        if extension == "json":
            continue
        match = _FRAME_SUFFIX.match(extension)
        if not match:
            check.problems.append(f"{where}: unexpected member extension {extension!r}")
            continue
        frames.append((int(match.group(1)), data))
    if len(json_members) != 1:
        check.problems.append(f"{where}: needs exactly one .json member, has {len(json_members)}")
        return
    try:
        meta = json.loads(json_members[0])
    except json.JSONDecodeError as error:
        check.problems.append(f"{where}: metadata is not valid JSON ({error})")
        return
    if [index for index, _ in frames] != list(range(len(frames))):
        check.problems.append(f"{where}: frames must be numbered 0..{len(frames) - 1} in order")
    if meta.get("key") != key or len(meta.get("frame_names", [])) != len(frames) or not frames:
        check.problems.append(f"{where}: metadata key/frame count does not match the members")
    for index, data in frames:
        try:
            check_jpeg_decodes(data, f"{where} frame {index}")
        except DataError as error:
            check.problems.append(str(error))
    check.samples += 1
    check.frames += len(frames)
    check.pids.add(meta.get("pid"))


def verify_shard(path: Path, entry: dict) -> ShardCheck:
    """Check one shard file against its manifest entry."""
    check = ShardCheck(path.name)
    if not path.is_file():
        check.problems.append(f"{path}: shard listed in the manifest is missing")
        return check
    if sha256_of_file(path) != entry.get("sha256"):
        check.problems.append(f"{path}: sha256 differs from the manifest")
    keys_seen: list[str] = []
    current_key, current = None, []
    try:
        with tarfile.open(path, mode="r:") as tar:
            for member in tar:
                reason = unsafe_member_reason(member.name) or (None if member.isfile() else "not a regular file")
                if reason:
                    check.problems.append(f"{path}: member {member.name!r}: {reason}")
                    continue
                key, extension = split_member_name(member.name)
                if key != current_key:
                    if current_key is not None:
                        _check_sample(path.name, current_key, current, check)
                    if key in keys_seen:
                        check.problems.append(f"{path}: duplicate sample key {key!r}")
                    keys_seen.append(key)
                    current_key, current = key, []
                current.append((extension, tar.extractfile(member).read()))
            if current_key is not None:
                _check_sample(path.name, current_key, current, check)
    except (tarfile.TarError, EOFError, OSError) as error:
        check.problems.append(f"{path}: unreadable or truncated tar ({error})")
        return check
    if keys_seen != entry.get("keys"):
        check.problems.append(f"{path}: sample keys differ from the manifest")
    return check


def _verify_task(task) -> ShardCheck:
    return verify_shard(*task)


def find_shard_sets(root: Path) -> list[Path]:
    """Folders under `root` that hold a shard-set manifest, in a stable order."""
    return sorted(path.parent for path in Path(root).rglob(MANIFEST_NAME))


def verify_dataset(root: Path, workers: int = 1, progress: bool = True) -> list[SplitReport]:
    """Verify every shard set under `root`; one report per set (problems empty when all is well)."""
    root = Path(root)
    sets = find_shard_sets(root)
    if not sets:
        raise DataError(str(root), f"no shard sets ({MANIFEST_NAME}) found")
    manifests = {folder: json.loads((folder / MANIFEST_NAME).read_text()) for folder in sets}
    tasks = [(folder / entry["name"], entry) for folder in sets for entry in manifests[folder]["shards"]]
    checks = []
    with worker_results(_verify_task, tasks, workers, ordered=True) as results, \
            tqdm(total=len(tasks), unit="shard", desc="verify", disable=not progress) as bar:
        for check in results:
            checks.append(check)
            bar.update()
    reports, position = [], 0
    for folder in sets:
        manifest = manifests[folder]
        shard_checks = checks[position : position + len(manifest["shards"])]
        position += len(manifest["shards"])
        problems = [p for c in shard_checks for p in c.problems]
        if not manifest.get("complete"):
            problems.insert(0, f"{folder / MANIFEST_NAME}: run did not complete (use xfd-shard --resume)")
        samples = sum(c.samples for c in shard_checks)
        if samples != manifest["totals"]["samples"]:
            problems.append(f"{folder}: {samples} samples found, manifest says {manifest['totals']['samples']}")
        reports.append(SplitReport(
            split=str(folder.relative_to(root)) if folder != root else manifest["split"],
            identities=len(set().union(*(c.pids for c in shard_checks))) if shard_checks else 0,
            tracklets=samples,
            frames=sum(c.frames for c in shard_checks),
            shards=len(shard_checks),
            bytes=sum((folder / e["name"]).stat().st_size for e in manifest["shards"] if (folder / e["name"]).is_file()),
            problems=problems,
        ))
    return reports
