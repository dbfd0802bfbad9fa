"""JPEG validity checks.

`check_jpeg_structure` walks the marker segments (SOI, headers up to SOS, EOI at the end) without decoding:
fast enough to run on every frame while sharding, and it catches truncated files, non-JPEG bytes and broken
headers. `check_jpeg_decodes` fully decodes with Pillow (used by `xfd-shard --verify`), which also catches
corrupt entropy-coded data.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image

from .errors import DataError

_SOI = b"\xff\xd8"
_EOI = b"\xff\xd9"
# Markers without a length field (RSTn, TEM) that may appear before SOS.
_STANDALONE = {0x01} | set(range(0xD0, 0xD8))
_START_OF_FRAME = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def check_jpeg_structure(data: bytes, item: str) -> None:
    """Raise DataError unless `data` is a structurally complete baseline/progressive JPEG."""
    if len(data) < 4 or data[:2] != _SOI:
        raise DataError(item, "not a JPEG (missing SOI marker)")
    if not data.rstrip(b"\x00")[-2:] == _EOI:
        raise DataError(item, "truncated JPEG (missing EOI marker at end)")
    position, seen_frame_header = 2, False
    while True:
        if position + 4 > len(data) or data[position] != 0xFF:
            raise DataError(item, f"corrupt JPEG (bad marker at byte {position})")
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in _STANDALONE:
            position += 2
            continue
        if marker == 0xD9:
            raise DataError(item, "corrupt JPEG (EOI before image data)")
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        if length < 2 or position + 2 + length > len(data):
            raise DataError(item, f"corrupt JPEG (segment at byte {position} runs past the end)")
        if marker in _START_OF_FRAME:
            seen_frame_header = True
        if marker == 0xDA:  # SOS: entropy-coded data follows
            if not seen_frame_header:
                raise DataError(item, "corrupt JPEG (scan before frame header)")
            return
        position += 2 + length


def check_jpeg_decodes(data: bytes, item: str) -> tuple[int, int]:
    """Fully decode `data`; return (width, height) or raise DataError naming `item`."""
    check_jpeg_structure(data, item)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with Image.open(io.BytesIO(data)) as image:
                if image.format != "JPEG":
                    raise DataError(item, f"not a JPEG (Pillow reads it as {image.format})")
                image.load()
                return image.size
    except DataError:
        raise
    except Exception as error:  # Pillow raises OSError/SyntaxError/warnings on corrupt data
        raise DataError(item, f"JPEG does not decode ({error})") from error
