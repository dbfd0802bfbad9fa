"""MARS, G2A-VReID v1 and v2 layouts: protocol files decide train / query / gallery membership."""

from __future__ import annotations

import json

import numpy as np
import pytest
import webdataset as wds

from xfd.data.errors import DataError
from xfd.data.shard import ShardOptions, shard_dataset

from dataset_builders import write_mars_like


def _samples(folder):
    urls = [str(p) for p in sorted(folder.glob("*.tar"))]
    return {s["__key__"]: json.loads(s["json"]) for s in wds.DataPipeline(wds.SimpleShardList(urls),
                                                                          wds.tarfile_to_samples())}


def _expected_keys(rows, digits):
    return {f"{row[2]:0{digits}d}C{row[3]}T0001" for row in rows}


@pytest.mark.parametrize("layout", ["mars", "g2a", "g2a2"])
def test_membership_follows_the_protocol_files(tmp_path, layout):
    expected = write_mars_like(tmp_path / "src", layout)
    digits = 5 if layout == "g2a2" else 4
    result = shard_dataset(tmp_path / "src", tmp_path / "out", ShardOptions(layout="auto" if layout != "g2a" else "g2a"),
                           progress=False)
    assert result.layout == layout if layout != "g2a" else result.layout == "g2a"
    test_rows = expected["test_rows"]
    query_rows = [test_rows[i - 1] for i in expected["query_rows"]]
    gallery_rows = [row for i, row in enumerate(test_rows, 1) if i not in expected["query_rows"] and row[2] != -1]
    train_rows = [row for row in expected["train_rows"] if row[2] != -1]  # junk pid -1 dropped

    train, query, gallery = (_samples(tmp_path / "out" / s) for s in ("train", "query", "gallery"))
    assert set(train) == _expected_keys(train_rows, digits)
    assert set(query) == _expected_keys(query_rows, digits)
    assert set(gallery) == _expected_keys(gallery_rows, digits)
    assert any(meta["pid"] == 0 for meta in gallery.values())  # distractors are kept
    assert sorted({m["label"] for m in train.values()}) == [0, 1, 2]
    first_row = train_rows[0]
    meta = train[f"{first_row[2]:0{digits}d}C{first_row[3]}T0001"]
    assert len(meta["frame_names"]) == first_row[1] - first_row[0] + 1
    if layout == "g2a2":
        a2g = _samples(tmp_path / "out" / "a2g_query")
        assert set(a2g) == _expected_keys([test_rows[i - 1] for i in expected["a2g_query_rows"]], digits)
        assert all(m["platform"] == "aerial" for m in a2g.values())
    platforms = {m["platform"] for m in {**train, **query, **gallery}.values()}
    assert platforms == ({"ground"} if layout == "mars" else {"ground", "aerial"})


def test_mat_that_does_not_match_the_name_list(tmp_path):
    from scipy.io import savemat

    expected = write_mars_like(tmp_path / "src", "mars")
    rows = np.array(expected["train_rows"], dtype=np.float64)
    rows[1, 2] = 3  # claims another pid than its frames' names
    savemat(tmp_path / "src" / "info" / "tracks_train_info.mat", {"track_train_info": rows})
    with pytest.raises(DataError, match="does not match the name list") as caught:
        shard_dataset(tmp_path / "src", tmp_path / "out", ShardOptions(), progress=False)
    assert "tracks_train_info.mat" in caught.value.item and "row 2" in caught.value.rule


def test_mat_rows_outside_the_name_list(tmp_path):
    from scipy.io import savemat

    write_mars_like(tmp_path / "src", "mars")
    savemat(tmp_path / "src" / "info" / "tracks_test_info.mat",
            {"track_test_info": np.array([[1, 10_000, 4, 1]], dtype=np.float64)})
    with pytest.raises(DataError, match="outside the name list"):
        shard_dataset(tmp_path / "src", tmp_path / "out", ShardOptions(), progress=False)


def test_missing_protocol_file_is_named(tmp_path):
    write_mars_like(tmp_path / "src", "mars")
    (tmp_path / "src" / "info" / "query_IDX.mat").unlink()
    with pytest.raises(DataError, match="missing") as caught:
        shard_dataset(tmp_path / "src", tmp_path / "out", ShardOptions(), progress=False)
    assert caught.value.item.endswith("query_IDX.mat")
