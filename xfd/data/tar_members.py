"""One sample's bytes as ustar tar members, built directly: `<key>.json`, then `<key>.0000.jpg …`.

Every header field but name and size is fixed (mtime 0, mode 0644, uid/gid 0, empty owner names), so equal input
gives equal bytes. This runs once per frame of a whole dataset, so it does the least it can (see `sample_bytes`).
"""

from __future__ import annotations

import io
import os
import tarfile
from typing import NamedTuple, Sequence

from .errors import DataError
from .jpeg import check_jpeg_structure


class PlannedSample(NamedTuple):
    """What writing one sample needs (and no more: planned shards are sent to the worker processes)."""

    key: str
    pid: int | None
    camid: int | None
    unknown: tuple[str, ...]
    meta_json: bytes
    folder: str
    names: list[str]  # the stored frames, in order
    sizes: list[int]  # their sizes when planned


def _read_frame(folder_fd: int, folder: str, name: str, planned_size: int, resize, resize_quality: int,
                check=check_jpeg_structure) -> bytes:
    """The frame's bytes (one open relative to its folder, one read, one close), structure-checked; re-encoded
    with `--resize`."""
    try:
        fd = os.open(name, os.O_RDONLY, dir_fd=folder_fd)
        try:
            data = os.read(fd, planned_size + 1)
        finally:
            os.close(fd)
    except OSError as error:
        raise DataError(os.path.join(folder, name), f"frame cannot be read ({error.strerror or error})") from None
    if len(data) != planned_size:
        raise DataError(os.path.join(folder, name), f"frame changed while sharding ({planned_size} bytes when "
                        f"planned, {len(data)}{'+' if len(data) > planned_size else ''} now); run again")
    check(data, os.path.join(folder, name))
    if resize is None:
        return data
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            height, width = resize
            resized = image.convert("RGB").resize((width, height), Image.BICUBIC)
    except OSError as error:
        raise DataError(os.path.join(folder, name), f"JPEG does not decode ({error})") from error
    out = io.BytesIO()
    resized.save(out, format="JPEG", quality=resize_quality)
    return out.getvalue()


_BLOCK = 512
_RECORD = 20 * _BLOCK  # tar's default blocking factor: archives end on a 10240-byte boundary
# ustar header of a regular file with every field fixed but name and size: mode 0644, uid/gid 0, mtime 0, type
# '0', no link name, magic "ustar\0" + version "00", empty owner names, no device numbers, no prefix.
_HEADER_BEFORE_SIZE = b"%07o\0" % 0o644 + b"%07o\0" % 0 + b"%07o\0" % 0
_HEADER_AFTER_SIZE = b"%011o\0" % 0
_HEADER_TAIL = b"0" + b"\0" * 100 + b"ustar\x0000" + b"\0" * 247
_CHECKSUM_CONSTANT = sum(_HEADER_BEFORE_SIZE) + sum(_HEADER_AFTER_SIZE) + 8 * 32 + sum(_HEADER_TAIL)
# the whole header in one formatting step: name (padded to 100 bytes), size, checksum
_HEADER = b"%s" + _HEADER_BEFORE_SIZE + b"%011o\0" + _HEADER_AFTER_SIZE + b"%06o\0 " + _HEADER_TAIL
_ZEROS = bytes(2 * _RECORD)
_PADDING = tuple(_ZEROS[: (_BLOCK - r) % _BLOCK] for r in range(_BLOCK))  # after a member of size ≡ r (mod 512)


def _member(name: str, size: int):
    """tarfile's TarInfo with the same fixed fields (the reference `ustar_header` is tested against)."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def ustar_header(name: str, size: int) -> bytes:
    """The 512-byte USTAR header tarfile writes for `_member(name, size)`, built directly.

    tarfile's general header code costs more than reading the frame itself; shards have millions of
    members, so the fixed-field header is assembled here (a test checks it equals tarfile's byte for byte).
    """
    encoded = name.encode("ascii")
    if len(encoded) > 100 or size >= 8 ** 11:
        return _member(name, size).tobuf(tarfile.USTAR_FORMAT, "utf-8", "surrogateescape")
    return _HEADER % (encoded.ljust(100, b"\0"), size, _CHECKSUM_CONSTANT + sum(encoded) + sum(b"%011o" % size))


_OCTAL_DIGITS_SUM = tuple(sum(b"%04o" % value) - 4 * ord("0") for value in range(8 ** 4))  # of 12 bits


def frame_headers(key: str, sizes: Sequence[int]) -> list[bytes]:
    """The ustar headers of a sample's frame members `<key>.0000.jpg …` of these sizes (what `ustar_header` gives
    each), built together: the names share all but their counter, and a size's octal digit sum comes from a table
    (sizes below 8 GiB: 33 bits, three 12-bit slices)."""
    width = max(4, len(str(len(sizes) - 1)))
    if not key.isascii() or len(key) + width + 5 > 100 or (sizes and max(sizes) >= 8 ** 11):
        return [ustar_header(f"{key}.{j:0{width}d}.jpg", size) for j, size in enumerate(sizes)]
    prefix, table = key.encode("ascii"), _OCTAL_DIGITS_SUM
    names = [b"%s.%0*d.jpg" % (prefix, width, j) for j in range(len(sizes))]
    base = _CHECKSUM_CONSTANT + 11 * ord("0")  # the size field's 11 digits, before their values
    return [_HEADER % (name.ljust(100, b"\0"), size,
                       base + sum(name) + table[size & 0o7777] + table[size >> 12 & 0o7777] + table[size >> 24])
            for name, size in zip(names, sizes)]


def sample_bytes(sample: PlannedSample, resize=None, resize_quality: int = 95, check=check_jpeg_structure) -> bytes:
    """The tar members of one sample, json first, then the frames in order, as one block of bytes.

    The loop below runs once per frame of the whole dataset, so it does the least it can: frames opened relative
    to their folder and read in one call, header walks shared by the tracklet (`check`), headers built together
    from the planned sizes (a frame of another size is refused), paddings taken from a table."""
    parts = [ustar_header(f"{sample.key}.json", len(sample.meta_json)), sample.meta_json,
             _PADDING[len(sample.meta_json) % _BLOCK]]
    append = parts.append
    try:
        folder_fd = os.open(sample.folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as error:
        raise DataError(sample.folder, f"folder cannot be read ({error.strerror or error})") from None
    try:
        if resize is None:
            for header, name, size in zip(frame_headers(sample.key, sample.sizes), sample.names, sample.sizes):
                try:
                    fd = os.open(name, os.O_RDONLY, dir_fd=folder_fd)
                    try:
                        data = os.read(fd, size + 1)
                    finally:
                        os.close(fd)
                except OSError:
                    data = None
                if data is None or len(data) != size:
                    data = _read_frame(folder_fd, sample.folder, name, size, None, 0, check)  # raises, naming it
                check(data, name)
                append(header)
                append(data)
                append(_PADDING[size % _BLOCK])
        else:
            frames = [_read_frame(folder_fd, sample.folder, name, size, resize, resize_quality, check)
                      for name, size in zip(sample.names, sample.sizes)]
            for header, data in zip(frame_headers(sample.key, [len(data) for data in frames]), frames):
                append(header)
                append(data)
                append(_PADDING[len(data) % _BLOCK])
    except DataError as error:  # `check` names the frame by its file name alone; give its path
        if error.item in sample.names:
            raise DataError(os.path.join(sample.folder, error.item), error.rule) from None
        raise
    finally:
        os.close(folder_fd)
    return b"".join(parts)


def archive_end(size: int) -> bytes:
    """What tarfile writes when it closes an archive of `size` bytes: two zero blocks, then zeros up to a full
    record (tar's default blocking factor of 20)."""
    return _ZEROS[: 2 * _BLOCK + (-(size + 2 * _BLOCK)) % _RECORD]
