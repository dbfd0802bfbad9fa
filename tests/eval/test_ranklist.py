"""The rank-list picture on constructed cases: border colours by kind (match / wrong / junk, the metrics' junk
rule; unknown on an unlabelled split), its title and colour legend, geometry, the seeded query sample, the top-k
rankings kept by scoring, and frames read back from real shards by key."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from xfd.data.index import ShardIndex
from xfd.eval.metrics import GalleryLabels
from xfd.eval.protocol import ProtocolData
from xfd.eval.ranklist import (JUNK, KIND_COLOURS, MATCH, QUERY_COLOUR, UNKNOWN, WRONG, RankListLayout,
                               RankListRow, draw_ranklist, write_ranklist)
from xfd.eval.ranklist_rows import decode_frame, gallery_kinds, ranked_queries, ranklist_rows, sample_queries
from xfd.eval.score import ScoreOptions, score

from dataset_builders import sharded_detreidx

LAYOUT = RankListLayout(cell_height=20, cell_width=10, border=3, gap=2, separator=8)


def _frame(value: int, height: int = 7, width: int = 5) -> np.ndarray:
    return np.full((height, width, 3), value, dtype=np.uint8)  # (H, W, 3)


def _border_and_centre(image: Image.Image, box) -> tuple[set, tuple]:
    """Colours on the box's outermost ring of pixels, and the colour at its centre."""
    x0, y0, x1, y1 = box
    ring = {image.getpixel((x, y)) for x in range(x0, x1) for y in (y0, y1 - 1)}
    ring |= {image.getpixel((x, y)) for y in range(y0, y1) for x in (x0, x1 - 1)}
    return ring, image.getpixel(((x0 + x1) // 2, (y0 + y1) // 2))


def test_borders_say_match_wrong_and_junk():
    rows = [RankListRow("q0", [_frame(10), _frame(20)], [_frame(200), _frame(90), _frame(60)], [MATCH, WRONG, JUNK],
                        ["1/c1", "2/c1", "1/c0"]),
            RankListRow("q1", [_frame(30)], [_frame(120)], [WRONG], ["3/c2"])]
    image = draw_ranklist(rows, LAYOUT)
    assert image.mode == "RGB" and image.size == LAYOUT.size(rows)
    for r, row in enumerate(rows):
        for rank, (kind, frame) in enumerate(zip(row.kinds, row.gallery_frames)):
            ring, centre = _border_and_centre(image, LAYOUT.gallery_box(r, rank, len(row.query_frames)))
            assert ring == {KIND_COLOURS[kind]}, (r, rank, kind)
            assert centre == (int(frame[0, 0, 0]),) * 3  # the frame itself inside the border
        for i, frame in enumerate(row.query_frames):
            ring, centre = _border_and_centre(image, LAYOUT.query_box(r, i))
            assert ring == {QUERY_COLOUR} and centre == (int(frame[0, 0, 0]),) * 3
    assert len({KIND_COLOURS[MATCH], KIND_COLOURS[WRONG], KIND_COLOURS[JUNK], QUERY_COLOUR}) == 4


def test_boxes_do_not_overlap_and_gallery_follows_the_query_strip():
    last_query = LAYOUT.query_box(0, 3)
    first_gallery = LAYOUT.gallery_box(0, 0, 4)
    assert first_gallery[0] == last_query[2] + LAYOUT.separator
    assert LAYOUT.gallery_box(0, 1, 4)[0] == first_gallery[2] + LAYOUT.gap
    assert LAYOUT.query_box(1, 0)[1] >= LAYOUT.query_box(0, 0)[3] + LAYOUT.caption_height


def test_rows_are_checked():
    with pytest.raises(ValueError, match="unknown kind"):
        RankListRow("q", [_frame(1)], [_frame(2)], ["maybe"], ["x"])
    with pytest.raises(ValueError, match="2 gallery frames, 1 kinds"):
        RankListRow("q", [_frame(1)], [_frame(2), _frame(3)], [MATCH], ["x", "y"])
    with pytest.raises(ValueError, match="no query frames"):
        RankListRow("q", [], [], [], [])
    with pytest.raises(ValueError, match="no rank-list rows"):
        draw_ranklist([])


def test_written_png_opens(tmp_path):
    rows = [RankListRow("q", [_frame(5)], [_frame(6)], [MATCH], ["1"])]
    write_ranklist(tmp_path / "r.png", rows, LAYOUT)
    with Image.open(tmp_path / "r.png") as image:
        assert image.format == "PNG" and image.size == LAYOUT.size(rows)
    assert [p.name for p in tmp_path.iterdir()] == ["r.png"]  # no temporary left


def test_kinds_follow_the_junk_rule_of_the_metrics():
    labels = GalleryLabels(pids=np.array([7, 7, 8, 7, 9]), camids=np.array([1, 2, 1, 1, 3]))
    # query pid 7 cam 1: rows 0 and 3 are the same pid and camera (junk), row 1 a match, rows 2 and 4 wrong
    assert gallery_kinds(labels, 7, 1, np.array([3, 1, 2, 0, 4])) == [JUNK, MATCH, WRONG, JUNK, WRONG]
    assert gallery_kinds(labels, 5, 1, np.array([0, 1])) == [WRONG, WRONG]  # pid absent from the gallery
    assert gallery_kinds(None, None, 1, np.array([0, 1])) == [UNKNOWN, UNKNOWN]  # an unlabelled split


def test_query_sample_is_seeded_spread_and_bounded():
    counts = {"A2G": 5, "G2A": 0, "A2A": 1, "X": 4}
    chosen = sample_queries(counts, 6, seed=3)
    assert chosen == sample_queries(counts, 6, seed=3)
    assert [name for name, _ in chosen].count("A2A") == 1  # it has only one query
    assert {name for name, _ in chosen} == {"A2G", "A2A", "X"} and len(chosen) == 6 == len(set(chosen))
    assert all(0 <= row < counts[name] for name, row in chosen)
    assert len(sample_queries(counts, 50, seed=0)) == 10  # every query, no more
    assert sample_queries({"A2G": 3}, 0, seed=0) == []
    assert len({tuple(sample_queries({"A": 100}, 3, seed=s)) for s in range(5)}) > 1  # the seed matters


def test_ranked_queries_keep_the_metrics_order_of_wanted_queries_only():
    q = np.array([[1.0, 0.0], [0.0, 1.0]])
    g = np.array([[0.6, 0.8], [0.8, 0.6], [0.8, 0.6], [0.0, 1.0]])  # rows 1 and 2 tie
    data = ProtocolData("A2G", q, g, np.array([1, 2]), np.array([1, 2, 3, 2]), np.zeros(2), np.ones(4))
    results = score([data], ScoreOptions(device="cpu", top=3))
    ranked = ranked_queries(results, [("A2G", 1), ("A2G", 0)], k=3)
    assert list(ranked) == [("A2G", 1), ("A2G", 0)]
    assert ranked[("A2G", 1)].tolist() == [3, 0, 1] and ranked[("A2G", 0)].tolist() == [1, 2, 0]  # ties: lower row


def test_title_and_legend_of_the_colours():
    rows = [RankListRow("q", [_frame(5)], [_frame(6), _frame(7)], [MATCH, UNKNOWN], ["1", "2"])]
    image = draw_ranklist(rows, LAYOUT, title="Rank list (re-ranked)")
    header = image.crop((0, 0, image.width, LAYOUT.margin + LAYOUT.header_height))
    colours = {colour for _, colour in header.getcolors(maxcolors=1 << 16)}
    assert {QUERY_COLOUR, *KIND_COLOURS.values()} <= colours
    assert any(max(c) < 80 for c in colours)  # dark (anti-aliased) text: the title and the legend
    only_unknown = draw_ranklist([RankListRow("q", [_frame(5)], [_frame(6)], [UNKNOWN], ["2"])], LAYOUT)
    header = only_unknown.crop((0, 0, only_unknown.width, LAYOUT.margin + LAYOUT.header_height))
    assert KIND_COLOURS[MATCH] not in {c for _, c in header.getcolors(maxcolors=1 << 16)}  # no labels, no match key
    assert LAYOUT.query_box(0, 0)[1] >= LAYOUT.margin + LAYOUT.header_height  # rows below the header


@pytest.fixture(scope="module")
def shard_root(tmp_path_factory):
    return sharded_detreidx(tmp_path_factory.mktemp("ranklist"), train_ids=2, test_ids=3)


def test_rows_read_each_tracklets_frames_from_the_shards(shard_root):
    case = "case1_aerial_to_ground"
    query_keys = ShardIndex.open(shard_root / case / "query").keys
    gallery = ShardIndex.open(shard_root / case / "gallery")
    g_keys = gallery.keys
    pids = [gallery.meta(k)["pid"] for k in g_keys]
    camids = [gallery.meta(k)["camid"] for k in g_keys]
    data = ProtocolData("A2G", np.eye(3, dtype=np.float32), np.eye(3, dtype=np.float32), np.array(pids),
                        np.array(pids), np.array([99] * 3), np.array(camids), np.array(query_keys[:3]),
                        np.array(g_keys))
    rows = ranklist_rows({"A2G": data}, {"A2G": (shard_root / case / "query", shard_root / case / "gallery")},
                         {("A2G", 1): np.array([2, 1, 0])}, query_frames=3)
    (row,) = rows
    assert len(row.query_frames) == 3 and len(row.gallery_frames) == 3
    assert all(f.dtype == np.uint8 and f.ndim == 3 and f.shape[2] == 3 for f in row.query_frames + row.gallery_frames)
    assert row.kinds == [WRONG, MATCH, WRONG]  # query 1 has gallery 1's pid under another camid
    middle = gallery.frames(g_keys[2], [gallery.num_frames(g_keys[2]) // 2])[0]
    np.testing.assert_array_equal(row.gallery_frames[0], decode_frame(middle))
    assert query_keys[1] in row.title and f"pid {pids[1]}" in row.title
