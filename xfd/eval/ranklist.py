"""The rank-list picture: for each sampled query, a strip of its frames, then its top-k gallery tracklets (one
representative frame each) framed by what they are under the protocol: green = correct match, red = wrong
identity, grey = junk (same pid and same camid, left out of the metrics; docs/protocol.md), amber = identity
unknown (an unlabelled split). A header carries the picture's title (which ranking it shows) and a legend of
these colours.

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

MATCH, WRONG, JUNK, UNKNOWN = "match", "wrong", "junk", "unknown"
KIND_COLOURS = {MATCH: (0, 170, 0), WRONG: (220, 0, 0), JUNK: (150, 150, 150), UNKNOWN: (230, 150, 0)}  # RGB
QUERY_COLOUR = (40, 90, 210)  # border of the query's own frames
LEGEND = ((QUERY_COLOUR, "query frames"), (KIND_COLOURS[MATCH], "same identity"),
          (KIND_COLOURS[WRONG], "wrong identity"), (KIND_COLOURS[JUNK], "junk: same identity and camera, not scored"),
          (KIND_COLOURS[UNKNOWN], "identity unknown"))
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
    """Pixel geometry: a header (the picture's title, then a legend line), then one row per query: every frame is
    drawn as a (cell_height, cell_width) box whose outer `border` pixels are its frame colour; rows stack
    vertically, each with a title line above and a caption line below."""

    cell_height: int = 128
    cell_width: int = 64
    border: int = 4
    gap: int = 4  # between boxes
    separator: int = 24  # between the query strip and the ranked gallery
    title_height: int = 14
    caption_height: int = 12
    margin: int = 6
    header_height: int = 34  # title line + legend line
    legend_width: int = 560  # the legend's line, which the picture is at least as wide as

    def row_height(self) -> int:
        return self.title_height + self.cell_height + self.caption_height + self.margin

    def _row_top(self, row: int) -> int:
        return self.margin + self.header_height + row * self.row_height() + self.title_height

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
        width = max(max(widths, default=2 * self.margin) + self.margin, self.legend_width)
        return width, self.margin + self.header_height + len(rows) * self.row_height()


def _framed(frame: np.ndarray, colour: tuple[int, int, int], layout: RankListLayout) -> Image.Image:
    """The frame resized into the box's interior, inside a `border`-wide frame of `colour`."""
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"frames must be (H, W, 3) uint8, got {frame.shape} {frame.dtype}")
    box = Image.new("RGB", (layout.cell_width, layout.cell_height), colour)
    inner = (layout.cell_width - 2 * layout.border, layout.cell_height - 2 * layout.border)
    box.paste(Image.fromarray(frame).resize(inner, Image.BILINEAR), (layout.border, layout.border))
    return box


def _header(pen: ImageDraw.ImageDraw, font, layout: RankListLayout, title: str, kinds: set[str]) -> None:
    """The title line and a legend of the colours: the query's, the labelled kinds when any is drawn, "identity
    unknown" when drawn."""
    pen.text((layout.margin, layout.margin), title, fill=TEXT, font=font)
    x, y = layout.margin, layout.margin + layout.header_height // 2
    shown = {QUERY_COLOUR} | ({KIND_COLOURS[k] for k in (MATCH, WRONG, JUNK)} if kinds - {UNKNOWN} else set())
    shown |= {KIND_COLOURS[UNKNOWN]} if UNKNOWN in kinds else set()
    for colour, label in LEGEND:
        if colour not in shown:
            continue
        pen.rectangle((x, y + 1, x + 9, y + 10), fill=colour)
        pen.text((x + 13, y), label, fill=TEXT, font=font)
        x += 13 + int(pen.textlength(label, font=font)) + 12


def draw_ranklist(rows: list[RankListRow], layout: RankListLayout = RankListLayout(),
                  title: str = "Rank list") -> Image.Image:
    """The picture of `rows` (RGB), under `title` and a legend of the border colours."""
    if not rows:
        raise ValueError("no rank-list rows to draw")
    image = Image.new("RGB", layout.size(rows), BACKGROUND)
    pen = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    _header(pen, font, layout, title, {kind for row in rows for kind in row.kinds})
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


def write_ranklist(path: str | Path, rows: list[RankListRow], layout: RankListLayout = RankListLayout(),
                   title: str = "Rank list") -> None:
    """Draw `rows` and write the PNG atomically."""
    buffer = io.BytesIO()
    draw_ranklist(rows, layout, title).save(buffer, format="PNG", compress_level=1)  # 3x faster than level 6
    with atomic_output(path, "wb") as handle:
        handle.write(buffer.getvalue())
