"""`xfd-shard --verify`: re-check every shard of every shard set against its manifest.

Which sets: every split that a `dataset.json` lists (a listed split without its manifest is a problem) and every
shard set found on disk (one that no `dataset.json` lists is a problem, except when verifying a single set's
folder). For each shard: a plain file name in the manifest, the sha256 recorded there, the tar structure (regular
files only; flat member names, no absolute paths or `..`), sample grouping (one `<key>.json` then frames
`<key>.0000.jpg …` numbered without gaps, no key repeated), metadata consistency (frame count, bins in range, the
pid agreeing with the key and the manifest; none in an unlabelled split), and that every frame fully decodes.
"""

from __future__ import annotations

import json
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from ..parallel import worker_results
from .encoding import check_bins
from .errors import DataError
from .jpeg import check_jpeg_decodes
from .manifest import (
    DATASET_INDEX_NAME,
    MANIFEST_NAME,
    check_sample_identity,
    is_labelled,
    read_dataset_index,
    read_manifest,
    shard_path,
)
from .shard import TRAINING_SPLITS, sha256_of_file
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


def _check_sample(shard: str, key: str, members: list[tuple[str, bytes]], check: ShardCheck, manifest_pid,
                  labelled: bool) -> None:
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
    if not isinstance(meta, dict):
        check.problems.append(f"{where}: metadata is not a JSON object")
        return
    if meta.get("key") != key or len(meta.get("frame_names", [])) != len(frames) or not frames:
        check.problems.append(f"{where}: metadata key/frame count does not match the members")
    for rule in (lambda: check_sample_identity(where, key, meta, manifest_pid, labelled),
                 lambda: check_bins(where, meta)):
        try:
            rule()
        except DataError as error:
            check.problems.append(str(error))
    for index, data in frames:
        try:
            check_jpeg_decodes(data, f"{where} frame {index}")
        except DataError as error:
            check.problems.append(str(error))
    check.samples += 1
    check.frames += len(frames)
    check.pids.add(meta.get("pid"))


def verify_shard(path: Path, entry: dict, labelled: bool = True) -> ShardCheck:
    """Check one shard file against its manifest entry."""
    check = ShardCheck(path.name)
    if not path.is_file():
        check.problems.append(f"{path}: shard listed in the manifest is missing")
        return check
    if sha256_of_file(path) != entry.get("sha256"):
        check.problems.append(f"{path}: sha256 differs from the manifest")
    keys_seen: list[str] = []
    pid_of = dict(zip(entry.get("keys", []), entry.get("pids", [])))  # the manifest's pid of each key
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
                        _check_sample(path.name, current_key, current, check, pid_of.get(current_key), labelled)
                    if key in keys_seen:
                        check.problems.append(f"{path}: duplicate sample key {key!r}")
                    keys_seen.append(key)
                    current_key, current = key, []
                current.append((extension, tar.extractfile(member).read()))
            if current_key is not None:
                _check_sample(path.name, current_key, current, check, pid_of.get(current_key), labelled)
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


def _listed_splits(root: Path, sets: list[Path]) -> tuple[dict[Path, dict], list[SplitReport]]:
    """{set folder: its dataset.json entry} for every split a dataset.json under `root` lists, and a report for
    each listed split that has no manifest, each dataset.json that cannot be read, and each set no index lists."""
    listed: dict[Path, dict] = {}
    missing: list[SplitReport] = []
    owners = sorted(path.parent for path in root.rglob(DATASET_INDEX_NAME))
    for owner in owners:
        try:
            splits = read_dataset_index(owner)["splits"]
        except DataError as error:
            missing.append(SplitReport(str(owner.relative_to(root) / DATASET_INDEX_NAME), 0, 0, 0, 0, 0, [str(error)]))
            continue
        for split, info in sorted(splits.items()):
            folder = owner.joinpath(*split.split("/"))
            if ".." in split.split("/") or split.startswith("/"):
                problem = f"{owner / DATASET_INDEX_NAME}: split name {split!r} is not a relative path"
                missing.append(SplitReport(split, 0, 0, 0, 0, 0, [problem]))
            elif not (folder / MANIFEST_NAME).is_file():
                missing.append(SplitReport(str(folder.relative_to(root)), 0, 0, 0, 0, 0, [
                    f"{owner / DATASET_INDEX_NAME} lists split {split!r} but {folder / MANIFEST_NAME} is missing"]))
            else:
                listed[folder] = info if isinstance(info, dict) else {}
    for folder in sets:
        if folder in listed or (folder == root and not owners):
            continue
        owner = next((o for o in reversed(owners) if o in folder.parents), None)
        where = f"{owner / DATASET_INDEX_NAME} does not list it" if owner else f"no {DATASET_INDEX_NAME} above it"
        missing.append(SplitReport(str(folder.relative_to(root)), 0, 0, 0, 0, 0,
                                   [f"{folder}: shard set found on disk but {where}"]))
    return listed, missing


def _set_problems(folder: Path, manifest: dict, listed: dict | None) -> list[str]:
    """What is wrong with a manifest before its shards are opened."""
    problems = []
    manifest_path = folder / MANIFEST_NAME
    if not manifest.get("complete"):
        problems.append(f"{manifest_path}: run did not complete (use xfd-shard --resume)")
    if not is_labelled(manifest) and manifest.get("split") in TRAINING_SPLITS:
        problems.append(f"{manifest_path}: training split {manifest.get('split')!r} is marked unlabelled")
    if listed is not None and is_labelled(listed) != is_labelled(manifest):
        problems.append(f"{manifest_path}: labelled {is_labelled(manifest)} but dataset.json says "
                        f"{is_labelled(listed)}")
    for entry in manifest["shards"]:
        try:
            shard_path(folder, entry)
        except DataError as error:
            problems.append(str(error))
    return problems


def _plain_name(folder: Path, entry: dict) -> bool:
    try:
        shard_path(folder, entry)
    except DataError:
        return False
    return True


def verify_dataset(root: Path, workers: int = 1, progress: bool = True) -> list[SplitReport]:
    """Verify every shard set under `root`; one report per set (problems empty when all is well)."""
    root = Path(root)
    sets = find_shard_sets(root)
    listed, reports = _listed_splits(root, sets)
    if not sets and not reports:
        raise DataError(str(root), f"no shard sets ({MANIFEST_NAME}) found")
    manifests, unreadable = {}, {}
    for folder in sets:
        try:
            manifests[folder] = read_manifest(folder)
        except DataError as error:
            unreadable[folder] = str(error)
    tasks = [(folder / entry["name"], entry, is_labelled(manifests[folder]))
             for folder in manifests for entry in manifests[folder]["shards"] if _plain_name(folder, entry)]
    checks: dict[tuple[Path, str], ShardCheck] = {}
    with worker_results(_verify_task, tasks, workers, ordered=True) as results, \
            tqdm(total=len(tasks), unit="shard", desc="verify", disable=not progress) as bar:
        for task, check in zip(tasks, results):
            checks[task[0].parent, task[1]["name"]] = check
            bar.update()
    for folder in sets:
        name = str(folder.relative_to(root)) if folder != root else None
        if folder in unreadable:
            reports.append(SplitReport(name or folder.name, 0, 0, 0, 0, 0, [unreadable[folder]]))
            continue
        manifest = manifests[folder]
        problems = _set_problems(folder, manifest, listed.get(folder))
        shard_checks = [checks[folder, entry["name"]] for entry in manifest["shards"]
                        if (folder, entry["name"]) in checks]
        problems += [p for c in shard_checks for p in c.problems]
        samples = sum(c.samples for c in shard_checks)
        expected = manifest.get("totals", {}).get("samples")
        if samples != expected:
            problems.append(f"{folder}: {samples} samples found, manifest says {expected}")
        labelled = is_labelled(manifest)
        reports.append(SplitReport(
            split=name or manifest.get("split", folder.name),
            identities=len(set().union(*(c.pids for c in shard_checks))) if labelled else None,
            tracklets=samples,
            frames=sum(c.frames for c in shard_checks),
            shards=len(shard_checks),
            bytes=sum((folder / c.name).stat().st_size for c in shard_checks if (folder / c.name).is_file()),
            problems=problems,
        ))
    return sorted(reports, key=lambda report: report.split)
