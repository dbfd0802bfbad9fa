"""JPEG validity checks.

`check_jpeg_structure` walks the whole file without decoding: SOI, the header segments (lengths inside the
file, a frame header before the first scan), then every entropy-coded scan — each 0xFF byte there must be
stuffing (FF 00), a restart marker in sequence (RST0..RST7, only when a restart interval is defined), or a
marker between progressive scans — and finally EOI as the last bytes. It runs on every frame while sharding and
catches truncated files, non-JPEG bytes, broken headers, concatenated or spliced files and garbage markers in
scan data.

`check_jpeg_decodes` adds a full decode with Pillow (used by `xfd-shard --verify`) and compares the decoded
size with the frame header.

Limit: JPEG carries no checksum. Damage that leaves the entropy-coded data syntactically valid (flipped bits,
zeroed runs) decodes into a damaged picture that no decoder reports — libjpeg only warns. Shards therefore
record a sha256 each, which catches any change after sharding.
"""

from __future__ import annotations

import io
import re
import warnings

from PIL import Image

from .errors import DataError

_SCAN_MARKER = re.compile(rb"\xff[^\x00]")
_SOI, _EOI = 0xD8, 0xD9
_SOS, _DRI = 0xDA, 0xDD
_RST = range(0xD0, 0xD8)
_START_OF_FRAME = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def check_jpeg_structure(data: bytes, item: str) -> tuple[int, int]:
    """Raise DataError unless `data` is a structurally complete JPEG; return (width, height) from its header.

    Runs on every frame while sharding, so the walk is written for speed: one loop over markers, header segment
    lengths read inline, and entropy-coded data skipped by a regular expression (C speed) to the next 0xFF that
    is not stuffing."""
    _check_ends(data, item)
    return _walk(data, item, 2, None, 0, False)


class JpegStructureChecker:
    """`check_jpeg_structure` for a run of frames, remembering the last few headers it validated.

    Frames of one tracklet usually share their header byte for byte (quantisation and Huffman tables, size):
    a frame that starts with a remembered header (up to and including its first scan header) has, by
    construction, the same verdict and state there, so only its scan data is walked. Same verdicts as
    `check_jpeg_structure` (a test compares them on thousands of damaged files)."""

    def __init__(self, remember: int = 4):
        self.remember = remember
        self._headers: list[tuple[bytes, tuple[int, int], int]] = []  # (header bytes, size, restart interval)

    def __call__(self, data: bytes, item: str) -> tuple[int, int]:
        for header, size, restart_interval in self._headers:
            if data.startswith(header):  # SOI first, and the walk's state at the first scan's data is known
                found = _SCAN_MARKER.search(data, len(header))
                if found is not None and found.start() == len(data) - 2 and data[-1] == _EOI:
                    return size  # the usual frame: one scan, its only marker the EOI at the end
                _check_ends(data, item)
                return _walk(data, item, len(header), size, restart_interval, True)
        _check_ends(data, item)
        first_scan: list = []
        size = _walk(data, item, 2, None, 0, False, first_scan)
        if first_scan:
            self._headers = [(data[: first_scan[0]], *first_scan[1:])] + self._headers[: self.remember - 1]
        return size


def _check_ends(data: bytes, item: str) -> None:
    if len(data) < 4 or data[0] != 0xFF or data[1] != _SOI:
        raise DataError(item, "not a JPEG (missing SOI marker)")
    if data[-2:] != b"\xff\xd9":
        raise DataError(item, "truncated JPEG (missing EOI marker at end)")


def _walk(data: bytes, item: str, position: int, size, restart_interval: int, in_scan: bool,
          first_scan: list | None = None) -> tuple[int, int]:
    """The marker walk from `position` in the given state; `first_scan` receives (offset of the first scan's
    data, size, restart interval) when the walk passes the first scan header."""
    end = len(data)
    next_restart = 0
    while True:
        if in_scan:
            found = _SCAN_MARKER.search(data, position)
            if found is None:
                raise DataError(item, "truncated JPEG (scan data without EOI)")
            position = found.start()
        elif position + 1 >= end:
            raise DataError(item, "truncated JPEG (header segments run into the end of the file)")
        if data[position] != 0xFF:
            raise DataError(item, f"corrupt JPEG (expected a marker at byte {position})")
        marker = data[position + 1]
        if marker < 0xD0 or marker > 0xD9:  # a marker with a length: header segment, frame or scan header
            if marker == 0xFF:  # fill byte before a marker
                position += 1
                continue
            if marker == 0x00:
                raise DataError(item, f"corrupt JPEG (unexpected marker 0x00 at byte {position})")
            if position + 4 > end:
                raise DataError(item, f"truncated JPEG (segment header at byte {position} cut off)")
            length = (data[position + 2] << 8) | data[position + 3]
            if length < 2 or position + 2 + length > end:
                raise DataError(item, f"corrupt JPEG (segment at byte {position} runs past the end)")
            if marker in _START_OF_FRAME:
                size = ((data[position + 7] << 8) | data[position + 8], (data[position + 5] << 8) | data[position + 6])
            elif marker == _DRI:
                restart_interval = int.from_bytes(data[position + 4 : position + 6], "big")
            elif marker == _SOS:
                if size is None:
                    raise DataError(item, "corrupt JPEG (scan before frame header)")
                in_scan, next_restart = True, 0
                if first_scan is not None and not first_scan:
                    first_scan += [position + 2 + length, size, restart_interval]
            position += 2 + length
        elif marker in _RST:
            if not in_scan or restart_interval == 0:
                raise DataError(item, f"corrupt JPEG (restart marker at byte {position} without a restart interval)")
            if marker - 0xD0 != next_restart:
                raise DataError(item, f"corrupt JPEG (restart marker out of sequence at byte {position})")
            next_restart = (next_restart + 1) % 8
            position += 2
        elif marker == _EOI:
            if size is None or not in_scan:
                raise DataError(item, "corrupt JPEG (EOI before image data)")
            if position + 2 != end:
                raise DataError(item, f"corrupt JPEG (data after EOI at byte {position})")
            return size
        else:  # SOI again
            raise DataError(item, f"corrupt JPEG (unexpected marker 0x{marker:02X} at byte {position})")


def check_jpeg_decodes(data: bytes, item: str) -> tuple[int, int]:
    """Check the structure, then fully decode `data`; return (width, height) or raise DataError naming `item`."""
    header_size = check_jpeg_structure(data, item)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with Image.open(io.BytesIO(data)) as image:
                if image.format != "JPEG":
                    raise DataError(item, f"not a JPEG (Pillow reads it as {image.format})")
                image.load()
                decoded_size = image.size
    except DataError:
        raise
    except Exception as error:  # Pillow raises OSError/SyntaxError (or warnings) on data it cannot decode
        raise DataError(item, f"JPEG does not decode ({error})") from error
    if decoded_size != header_size:
        raise DataError(item, f"decoded size {decoded_size} differs from the frame header {header_size}")
    return decoded_size
