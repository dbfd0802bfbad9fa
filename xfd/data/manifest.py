"""Reading what `xfd-shard` writes beside the shards: `manifest.json` of a shard set, `dataset.json` of an output
folder, and the per-sample rules every reader applies (stream, shard index, `--verify`).

Readers trust nothing in these files: a file that is not valid JSON is an error naming it, a shard name must be a
plain file name inside the shard set's folder (never a path), and a sample's identity must agree with its key
and with the manifest (schema and rules in data_shards/README.md).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .errors import DataError

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
DATASET_INDEX_NAME = "dataset.json"
SHARD_NAME = re.compile(r"^shard-\d{6}\.tar$")
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_LEADING_DIGITS = re.compile(r"^\d+")


def read_json(path: Path, what: str) -> dict:
    """A JSON object from `path`; a missing, unreadable or malformed file is a DataError naming it."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(str(path), f"{what} is missing") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(str(path), f"{what} cannot be read ({error})") from None
    except json.JSONDecodeError as error:
        raise DataError(str(path), f"{what} is not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise DataError(str(path), f"{what} must hold a JSON object, found {type(value).__name__}")
    return value


def read_manifest(folder: Path) -> dict:
    """The manifest of the shard set in `folder` (error naming the file when missing or broken)."""
    manifest = read_json(Path(folder) / MANIFEST_NAME, "shard-set manifest")
    if not isinstance(manifest.get("shards"), list):
        raise DataError(str(Path(folder) / MANIFEST_NAME), "manifest has no list of shards")
    return manifest


def read_dataset_index(root: Path) -> dict:
    """OUT/dataset.json of an xfd-shard output folder (error naming the file when missing or broken)."""
    index = read_json(Path(root) / DATASET_INDEX_NAME, "xfd-shard dataset index")
    if not isinstance(index.get("splits"), dict):
        raise DataError(str(Path(root) / DATASET_INDEX_NAME), "dataset index has no 'splits' object")
    return index


def is_labelled(manifest_or_entry: dict) -> bool:
    """False only for splits sharded with `--unlabelled` (absent = labelled, so older shard sets still read)."""
    return manifest_or_entry.get("labelled", True) is not False


def shard_path(folder: Path, entry: dict, manifest_path: Path | None = None) -> Path:
    """The file of a manifest's shard entry: only a plain file name inside `folder` is accepted."""
    name = entry.get("name") if isinstance(entry, dict) else None
    if not isinstance(name, str) or not _PLAIN_NAME.match(name) or name in (".", ".."):
        where = manifest_path or Path(folder) / MANIFEST_NAME
        raise DataError(str(where), f"shard name {name!r} is not a plain file name inside the shard set's folder")
    return Path(folder) / name


def check_sample_identity(where: str, key: str, meta: dict, manifest_pid, labelled: bool) -> None:
    """A sample's pid must agree with its key (the key starts with the pid's digits in every layout xfd writes)
    and with the manifest; an unlabelled split's samples carry no pid and no label."""
    pid = meta.get("pid")
    if not labelled:
        if pid is not None or meta.get("label") is not None:
            raise DataError(where, f"sample of an unlabelled split carries pid {pid!r} / label "
                                   f"{meta.get('label')!r} (must be null)")
        return
    if isinstance(pid, bool) or not isinstance(pid, int):
        raise DataError(where, f"pid must be an integer, got {pid!r}")
    digits = _LEADING_DIGITS.match(key)
    if digits is None or int(digits.group()) != pid:
        raise DataError(where, f"pid {pid} disagrees with the sample key {key!r} (which names pid "
                               f"{int(digits.group()) if digits else None})")
    if manifest_pid != pid:
        raise DataError(where, f"pid {pid} disagrees with the manifest, which lists pid {manifest_pid!r}")
