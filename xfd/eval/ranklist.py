"""The rank-list picture: for each sampled query, a strip of its frames, then its top-k gallery tracklets (one
representative frame each) framed by what they are under the protocol: green = correct match, red = wrong
identity, grey = junk (same pid and same camid, left out of the metrics; docs/protocol.md).

Only drawing lives here (PIL); which queries, their rankings and their frames come from
`xfd.eval.ranklist_rows`. The layout's boxes are computed in one place (`RankListLayout`) so that tests can look
at the pixels where a border must be.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from xfd.atomic import atomic_output

MATCH, WRONG, JUNK = "match", "wrong", "junk"
KIND_COLOURS = {MATCH: (0, 170, 0), WRONG: (220, 0, 0), JUNK: (150, 150, 150)}  # RGB border per kind
QUERY_COLOUR = (40, 90, 210)  # border of the query's own frames
BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)


@dataclass(frozen=True)
class RankListRow:
    """One query: its frames and its ranked gallery tracklets (best first), each with its kind and a caption."""

    title: str
    query_frames: list[np.ndarray]  # each (H, W, 3) uint8
    gallery_frames: list[np.ndarray]  # each (H, W, 3) uint8, one per ranked gallery tracklet
    kinds: list[str]  # MATCH | WRONG | JUNK, one per gallery frame
    captions: list[str]  # text under each gallery frame (e.g. its pid)

    def __post_init__(self):
        if not self.query_frames:
            raise ValueError(f"rank-list row {self.title!r}: no query frames")
        if not len(self.gallery_frames) == len(self.kinds) == len(self.captions):
            raise ValueError(f"rank-list row {self.title!r}: {len(self.gallery_frames)} gallery frames, "
                             f"{len(self.kinds)} kinds, {len(self.captions)} captions")
        unknown = sorted(set(self.kinds) - set(KIND_COLOURS))
        if unknown:
            raise ValueError(f"rank-list row {self.title!r}: unknown kind(s) {unknown}; use {sorted(KIND_COLOURS)}")


@dataclass(frozen=True)
class RankListLayout:
    """Pixel geometry: every frame is drawn as a (cell_height, cell_width) box whose outer `border` pixels are
    its frame colour; rows stack vertically, each with a title line above and a caption line below."""

    cell_height: int = 128
    cell_width: int = 64
    border: int = 4
    gap: int = 4  # between boxes
    separator: int = 24  # between the query strip and the ranked gallery
    title_height: int = 14
    caption_height: int = 12
    margin: int = 6

    def row_height(self) -> int:
        return self.title_height + self.cell_height + self.caption_height + self.margin

    def _row_top(self, row: int) -> int:
        return self.margin + row * self.row_height() + self.title_height

    def query_box(self, row: int, i: int) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1), x1/y1 exclusive, of the i-th query frame of a row."""
        x0 = self.margin + i * (self.cell_width + self.gap)
        y0 = self._row_top(row)
        return x0, y0, x0 + self.cell_width, y0 + self.cell_height

    def gallery_box(self, row: int, rank: int, query_frames: int) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) of the gallery tracklet at 0-based `rank`, after a strip of `query_frames`."""
        strip = query_frames * (self.cell_width + self.gap) - self.gap
        x0 = self.margin + strip + self.separator + rank * (self.cell_width + self.gap)
        y0 = self._row_top(row)
        return x0, y0, x0 + self.cell_width, y0 + self.cell_height

    def size(self, rows: list[RankListRow]) -> tuple[int, int]:
        """(width, height) of the picture."""
        widths = [self.gallery_box(0, max(len(r.gallery_frames), 1) - 1, len(r.query_frames))[2] for r in rows]
        return max(widths, default=2 * self.margin) + self.margin, self.margin + len(rows) * self.row_height()


def _framed(frame: np.ndarray, colour: tuple[int, int, int], layout: RankListLayout) -> Image.Image:
    """The frame resized into the box's interior, inside a `border`-wide frame of `colour`."""
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"frames must be (H, W, 3) uint8, got {frame.shape} {frame.dtype}")
    box = Image.new("RGB", (layout.cell_width, layout.cell_height), colour)
    inner = (layout.cell_width - 2 * layout.border, layout.cell_height - 2 * layout.border)
    box.paste(Image.fromarray(frame).resize(inner, Image.BILINEAR), (layout.border, layout.border))
    return box


def draw_ranklist(rows: list[RankListRow], layout: RankListLayout = RankListLayout()) -> Image.Image:
    """The picture of `rows` (RGB)."""
    if not rows:
        raise ValueError("no rank-list rows to draw")
    image = Image.new("RGB", layout.size(rows), BACKGROUND)
    pen = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    for r, row in enumerate(rows):
        x0, y0, _, _ = layout.query_box(r, 0)
        pen.text((x0, y0 - layout.title_height + 1), row.title, fill=TEXT, font=font)
        for i, frame in enumerate(row.query_frames):
            image.paste(_framed(frame, QUERY_COLOUR, layout), layout.query_box(r, i)[:2])
        for rank, (frame, kind, caption) in enumerate(zip(row.gallery_frames, row.kinds, row.captions)):
            x0, y0, _, y1 = layout.gallery_box(r, rank, len(row.query_frames))
            image.paste(_framed(frame, KIND_COLOURS[kind], layout), (x0, y0))
            pen.text((x0, y1 + 1), f"{rank + 1}: {caption}", fill=TEXT, font=font)
    return image


def write_ranklist(path: str | Path, rows: list[RankListRow], layout: RankListLayout = RankListLayout()) -> None:
    """Draw `rows` and write the PNG atomically."""
    buffer = io.BytesIO()
    draw_ranklist(rows, layout).save(buffer, format="PNG")
    with atomic_output(path, "wb") as handle:
        handle.write(buffer.getvalue())
