"""The output folder of `xfd-shard`: never the user's data, replaced only when it is xfd-shard's own, a full disk
named, finished files made durable.

OUT may not be, contain or lie inside the source dataset. `--overwrite` and `--resume` act only on a folder that
xfd-shard wrote — known by its `dataset.json` (written last) or the `.xfd-shard` marker (written first, so a killed
run is recognised too) — and `--overwrite` deletes only the files xfd-shard writes.
"""

from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from pathlib import Path

from ..atomic import remove_temporaries, write_json_atomic
from .manifest import DATASET_INDEX_NAME, FORMAT_VERSION, MANIFEST_NAME, SHARD_NAME

OUTPUT_MARKER = ".xfd-shard"


class UnsafeOutputError(ValueError):
    """OUT is, contains or lies inside the source, or holds something xfd-shard did not write."""


class DiskFullError(OSError):
    """The output disk filled up; the message says what was being written and how to resume."""

    def __init__(self, path: str):
        super().__init__(errno.ENOSPC, f"disk full while writing {path}: its temporary file was removed and every "
                                       "finished shard is kept; free some space (or pick another OUT) and run the "
                                       "same command again with --resume")
        self.path = path

    def __reduce__(self):
        return DiskFullError, (self.path,)

    def __str__(self) -> str:
        return self.strerror


@contextmanager
def disk_full_named(path: Path):
    """Turn ENOSPC while writing `path` into a DiskFullError naming it."""
    try:
        yield
    except OSError as error:
        if error.errno == errno.ENOSPC and not isinstance(error, DiskFullError):
            raise DiskFullError(str(path)) from None
        raise


def sync_file(path: Path) -> None:
    """fsync a finished file. Shards are renamed into place unsynced (a crash may leave a damaged one, which
    --resume's sha256 check rewrites); the run syncs them here, in threads of the parent, while the workers go on,
    and only then writes the manifests that say `complete: true` (synced the same way, together)."""
    with disk_full_named(path):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def check_output_location(source: Path, out: Path) -> None:
    """Refuse an OUT that is the source dataset, contains it or lies inside it (links resolved)."""
    real_source, real_out = Path(source).resolve(), Path(out).resolve()
    if real_out == real_source:
        raise UnsafeOutputError(f"OUT {out} is the source dataset {source}: choose an output folder outside it")
    if real_out in real_source.parents:
        raise UnsafeOutputError(f"OUT {out} contains the source dataset {source}: choose an output folder that "
                                "does not hold the source")
    if real_source in real_out.parents:
        raise UnsafeOutputError(f"OUT {out} lies inside the source dataset {source}: choose an output folder "
                                "outside it")


def is_shard_output(folder: Path) -> bool:
    """A folder xfd-shard wrote: it has the marker of a run (written first) or the dataset index (written last)."""
    return (folder / OUTPUT_MARKER).is_file() or (folder / DATASET_INDEX_NAME).is_file()


def remove_previous_output(out: Path) -> None:
    """Delete what xfd-shard writes (shards, manifests, temporaries, dataset.json, marker) under `out` and the
    folders this leaves empty; anything else is left where it is. Links are not followed."""
    for folder, subfolders, files in os.walk(out, topdown=False):
        folder = Path(folder)
        for name in files:
            if SHARD_NAME.match(name) or name == MANIFEST_NAME:
                (folder / name).unlink()
        remove_temporaries(folder)
        if folder != out and not any(folder.iterdir()):
            folder.rmdir()
    for name in (DATASET_INDEX_NAME, OUTPUT_MARKER):
        (out / name).unlink(missing_ok=True)


def prepare_output(out: Path, overwrite: bool, resume: bool) -> None:
    """Make `out` ready for a run: refuse a non-empty folder without --overwrite/--resume, and any non-empty folder
    that is not an xfd-shard output; with --overwrite remove the earlier output's files; write the marker."""
    if out.exists() and not out.is_dir():
        raise UnsafeOutputError(f"OUT {out} exists and is not a folder")
    if out.exists() and any(out.iterdir()):
        if not (overwrite or resume):
            raise FileExistsError(f"{out} is not empty: pass --resume to continue a run or --overwrite to replace it")
        if not is_shard_output(out):
            raise UnsafeOutputError(
                f"{out} is not empty and is not an xfd-shard output (it has no {DATASET_INDEX_NAME} and no "
                f"{OUTPUT_MARKER} marker): refusing to {'replace' if overwrite else 'resume into'} it; choose "
                "an empty or new output folder")
        if overwrite:
            remove_previous_output(out)
    with disk_full_named(out / OUTPUT_MARKER):
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / OUTPUT_MARKER, {"tool": "xfd-shard", "format_version": FORMAT_VERSION}, sync=False)
    remove_temporaries(out)
