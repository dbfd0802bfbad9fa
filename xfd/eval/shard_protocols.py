"""The test protocols of a shard root: which query/gallery split pairs it has, their features (extracted on every
rank of a process group) and, without any model, what a submission for them must contain.

Protocols are found in ROOT/dataset.json: every split pair `<name>/query` + `<name>/gallery` (DetReIDX's
`case1_aerial_to_ground`, ...; MARS / G2A's top-level `query` + `gallery`; G2A v2's `a2g_query` + `a2g_gallery`).
DetReIDX case names get the benchmark's short labels (A2G, G2A, A2A). A listed split that is not on disk, a
query split without its gallery (or the reverse), and a query or gallery shard set on disk that dataset.json does
not list are errors naming the split: a protocol is never dropped silently.

Extraction runs on every rank (each rank reads its own shards, `xfd.inference`) and the parts are gathered, so
every rank ends with the same features whatever the world size. A split whose manifest lists no tracklets gives an
empty side, which `xfd.eval.score` reports as not scored. A split whose manifest says `"labelled": false` gives an
unlabelled side (no pids).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xfd.data.errors import DataError
from xfd.data.index import ShardIndex
from xfd.data.shard import DATASET_INDEX_NAME, MANIFEST_NAME
from xfd.eval.protocol import ProtocolData, from_feature_sets
from xfd.eval.submission import SubmissionCase, ordered_cases
from xfd.data.manifest import is_labelled, read_dataset_index, read_manifest
from xfd.inference import FeatureSet, empty_feature_set, extract_split, gather_feature_sets, tracklet_record

_SHORT = {"aerial_to_ground": "A2G", "ground_to_aerial": "G2A", "aerial_to_aerial": "A2A",
          "ground_to_ground": "G2G"}
_SIDE = re.compile(r"^(?:(?P<folder>.+)/)?(?P<prefix>(?:[a-z0-9]+_)?)(?P<side>query|gallery)$")


@dataclass(frozen=True)
class ProtocolSplits:
    name: str  # the label in tables (A2G, ...)
    query: str  # split paths relative to the shard root
    gallery: str


def find_protocols(root: str | Path) -> list[ProtocolSplits]:
    """The query/gallery split pairs of ROOT (listed in dataset.json and on disk), in a stable order."""
    root = Path(root)
    index = root / DATASET_INDEX_NAME
    if not index.is_file():
        raise FileNotFoundError(f"{index}: not an xfd-shard output folder")
    splits = set(read_dataset_index(root)["splits"])
    sides = {split for split in splits if _SIDE.match(split)}
    for split in sorted(sides):
        if not (root / split / MANIFEST_NAME).is_file():
            raise DataError(str(root / split), f"split {split} is listed in {DATASET_INDEX_NAME} but is not on disk "
                                               f"(no {MANIFEST_NAME})")
        other = re.sub(r"(query|gallery)$", lambda m: "gallery" if m[1] == "query" else "query", split)
        if other not in splits:
            raise DataError(str(index), f"split {split} is listed without its {other}: the protocol would have no "
                                        f"{_SIDE.match(other)['side']} side")
    unlisted = sorted(split for split in _side_splits_on_disk(root) if split not in splits)
    if unlisted:
        raise DataError(str(root / unlisted[0]), f"shard set(s) {', '.join(unlisted)} on disk but not listed in "
                                                 f"{index}: an unfinished or foreign xfd-shard output?")
    found = []
    for split in sorted(sides):
        match = _SIDE.match(split)
        if match["side"] != "query":
            continue
        base = match["folder"] or match["prefix"].rstrip("_") or "query/gallery"
        short = next((label for words, label in _SHORT.items() if words in base), None)
        found.append(ProtocolSplits(short or base, split, split[: -len("query")] + "gallery"))
    if not found:
        raise ValueError(f"{root}: no query/gallery split pairs in {DATASET_INDEX_NAME} ({sorted(splits)})")
    return found


def _side_splits_on_disk(root: Path) -> list[str]:
    """Query/gallery shard sets under ROOT (at most two folders deep), as split paths."""
    found = []
    for manifest in list(root.glob(f"*/{MANIFEST_NAME}")) + list(root.glob(f"*/*/{MANIFEST_NAME}")):
        split = manifest.parent.relative_to(root).as_posix()
        if _SIDE.match(split):
            found.append(split)
    return found


def split_size(folder: str | Path) -> int:
    """Tracklets the shard set in `folder` holds, from its manifest (no shard is opened)."""
    return sum(int(entry["samples"]) for entry in read_manifest(folder)["shards"])


@dataclass(frozen=True)
class Extraction:
    """Every protocol's gathered features (the same on every rank) and this rank's own share of the work."""

    protocols: dict[str, ProtocolData]
    rank_tracklets: int  # tracklets this rank ran through the model (query + gallery sides, all protocols)
    rank_seconds: float  # this rank's time in extract_split (reading, decoding, the model), gathers excluded


def extract_protocols(model, root: str | Path, *, num_frames: int, batch_size: int, image_size: tuple[int, int],
                      device="cpu", flip_tta: bool = True, num_threads: int = 2, rank: int = 0, world_size: int = 1,
                      progress: bool = True, clips: bool = False) -> Extraction:
    """Features of every protocol of ROOT: this rank extracts its shards of each split, the parts are gathered
    (collective: with world_size > 1 every rank must call this with the same arguments)."""
    root = Path(root)
    data, own, busy = {}, 0, 0.0
    for protocol in find_protocols(root):
        sides = []
        for split in (protocol.query, protocol.gallery):
            folder = root / split
            if split_size(folder) == 0:  # every rank reads the same manifest: all skip it together
                labelled = is_labelled(read_manifest(folder))
                sides.append(empty_feature_set(int(model.feature_dim), labelled))
                continue
            start = time.perf_counter()
            part = extract_split(model, folder, num_frames=num_frames, batch_size=batch_size,
                                 image_size=image_size, device=device, flip_tta=flip_tta, num_threads=num_threads,
                                 rank=rank, world_size=world_size, progress=progress, clips=clips)
            busy += time.perf_counter() - start
            own += len(part)
            sides.append(gather_feature_sets(part, world_size))
        data[protocol.name] = from_feature_sets(protocol.name, *sides)
    return Extraction(data, own, busy)


def split_labels(folder: str | Path) -> FeatureSet:
    """A shard set's labels and metadata without features (0-dimensional rows), read from the samples' JSON."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    labelled = is_labelled(manifest)
    if not manifest["shards"] or split_size(folder) == 0:
        return empty_feature_set(0, labelled)
    with ShardIndex.open(folder) as index:
        records = [tracklet_record(index.meta(key), key, f"{index.shard_of(key)} [{key}]", labelled)
                   for key in index.keys]
        keys = list(index.keys)
    columns = {name: np.array([r.meta[name] for r in records]) for name in records[0].meta}
    return FeatureSet(keys, np.zeros((len(keys), 0), np.float32),
                      np.array([r.pid for r in records], np.int64) if labelled else None,
                      np.array([r.camid for r in records], np.int64), np.array([r.platform for r in records], np.int8),
                      columns)


def shard_cases(root: str | Path) -> list[SubmissionCase]:
    """What a submission for ROOT's protocols must contain, from the shards' metadata alone (no model)."""
    root = Path(root)
    cases = {}
    for protocol in find_protocols(root):
        query, gallery = split_labels(root / protocol.query), split_labels(root / protocol.gallery)
        cases[protocol.name] = SubmissionCase.from_labels(protocol.name, np.array(query.names), query.pids,
                                                          query.meta.get("folder_pid"), gallery.names)
    return [cases[name] for name in ordered_cases(cases)]
