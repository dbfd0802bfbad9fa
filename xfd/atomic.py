"""Atomic file writes: write to a temporary file in the destination folder, fsync, then rename.

A reader (or a resumed run) therefore sees either the previous complete file or the new complete file,
never a half-written one.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator


# Temporaries of atomic_output: ".<final name>.<random>.tmp" beside the final file.
_TEMPORARY = re.compile(r"^\..+\.tmp$")


def remove_temporaries(folder: str | os.PathLike) -> int:
    """Delete what atomic writes of a killed process left in `folder`; return how many were removed."""
    removed = 0
    for path in Path(folder).iterdir():
        if _TEMPORARY.match(path.name) and path.is_file():
            path.unlink()
            removed += 1
    return removed


@contextmanager
def atomic_output(path: str | os.PathLike, mode: str = "wb", sync: bool = True) -> Iterator[IO]:
    """Yield a file object whose contents replace `path` only if the block finishes without error. `sync=False`
    skips the fsync: still all-or-nothing for readers, but a crash may leave an empty file (fine for hints that
    are re-checked, such as an interim manifest)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            if sync:
                os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes, sync: bool = True) -> None:
    with atomic_output(path, "wb", sync=sync) as handle:
        handle.write(data)


def write_json_atomic(path: str | os.PathLike, obj, sync: bool = True) -> None:
    """Write `obj` as indented JSON with sorted keys, so equal content gives equal bytes."""
    text = json.dumps(obj, indent=2, sort_keys=True) + "\n"
    with atomic_output(path, "w", sync=sync) as handle:
        handle.write(text)
