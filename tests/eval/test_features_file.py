"""The features file (.npz): every bad input is an error naming the file (and the key) — an empty file, a file
that is no npz, a single-array .npy, pickled objects (never loaded), labels that are not integers, contradictory
unlabelled files — through the library and as xfd-eval's exit status 2; metadata columns and unlabelled files round
trip, and files of older xfd without them still load."""

from __future__ import annotations

import numpy as np
import pytest

from xfd.cli.eval import main
from xfd.eval.protocol import ProtocolData, load_npz
from xfd.eval.synthetic import reid_features


def _arrays(**override) -> dict:
    data = reid_features(6, 20, dim=8, n_ids=4, seed=0)
    return {**data.arrays(), **override}


def _expect(path, message, capsys):
    with pytest.raises(ValueError) as caught:
        load_npz(path)
    assert str(path) in str(caught.value) and message in str(caught.value)
    assert main([str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("xfd-eval: error: ") and str(path) in err and message in err and "Traceback" not in err


def test_an_empty_file(tmp_path, capsys):
    path = tmp_path / "empty.npz"
    path.write_bytes(b"")
    _expect(path, "empty file (0 bytes)", capsys)


def test_a_file_that_is_not_an_npz(tmp_path, capsys):
    path = tmp_path / "notes.npz"
    path.write_text("q_feats,g_feats\n1,2\n")
    _expect(path, "not a features file (.npz): not a zip archive", capsys)
    npy = tmp_path / "single.npz"
    with open(npy, "wb") as handle:
        np.save(handle, np.eye(3))
    _expect(npy, "a single-array .npy file", capsys)


def test_a_damaged_npz(tmp_path, capsys):
    path = tmp_path / "cut.npz"
    np.savez(path, **_arrays())
    data = path.read_bytes()
    path.write_bytes(data[:60] + b"\0" * 40 + data[100:])  # the first member's bytes spoiled, the zip still there
    with pytest.raises(ValueError, match=str(path)):
        load_npz(path)
    assert main([str(path), "--no-progress"]) == 2


def test_pickled_objects_are_never_loaded(tmp_path, capsys):
    path = tmp_path / "objects.npz"
    np.savez(path, **_arrays(q_pids=np.array([1, "x", None, 2, 3, 4], dtype=object)))
    _expect(path, "key q_pids cannot be read without unpickling", capsys)


@pytest.mark.parametrize("pids, message", [
    (np.array(["1", "2", "3", "4", "5", "6"]), "q_pids must be integers, got dtype <U1; entry 0 is np.str_('1')"),
    (np.array([1.0, 2.0, 2.5, 3.0, 4.0, 5.0]), "q_pids must be integers: entry 2 is np.float64(2.5)"),
    (np.array([1.0, np.nan, 2.0, 3.0, 4.0, 5.0]), "q_pids must be integers: entry 1 is np.float64(nan)"),
    (np.array([True, False] * 3), "q_pids must be integers, got dtype bool"),
])
def test_pids_that_are_not_integers(tmp_path, capsys, pids, message):
    path = tmp_path / "pids.npz"
    np.savez(path, **_arrays(q_pids=pids))
    _expect(path, message, capsys)


def test_whole_float_pids_are_integers(tmp_path):
    path = tmp_path / "float_pids.npz"
    arrays = _arrays()
    np.savez(path, **dict(arrays, q_pids=arrays["q_pids"].astype(float)))
    data = load_npz(path)
    assert data.q_pids.dtype == np.int64 and np.array_equal(data.q_pids, arrays["q_pids"])


def test_unlabelled_files_and_metadata_round_trip(tmp_path, capsys):
    base = reid_features(6, 20, dim=8, n_ids=4, seed=0)
    meta = {"session": np.arange(6), "height": np.linspace(5.8, 120, 6), "name": np.array(list("abcdef"))}
    unlabelled = ProtocolData("U", base.q_feats, base.g_feats, None, None, q_meta=meta)
    unlabelled.save_npz(tmp_path / "u.npz")
    with np.load(tmp_path / "u.npz") as raw:
        assert "q_pids" not in raw.files and "q_camids" not in raw.files and not bool(raw["labelled"])
    back = load_npz(tmp_path / "u.npz", "U")
    assert not back.labelled and (back.q_camids == -1).all()
    assert set(back.q_meta) == set(meta) and np.array_equal(back.q_meta["height"], meta["height"])
    assert main([str(tmp_path / "u.npz"), "--no-progress"]) == 0
    assert "not scored: unlabelled split" in capsys.readouterr().out

    contradictory = tmp_path / "both.npz"
    np.savez(contradictory, **_arrays(labelled=np.array(False)))
    _expect(contradictory, "holds pids but says labelled = False", capsys)
    no_flag = tmp_path / "no_pids.npz"
    arrays = _arrays()
    del arrays["q_pids"], arrays["g_pids"]
    np.savez(no_flag, **arrays)
    _expect(no_flag, "missing key(s) q_pids, g_pids", capsys)


def test_files_of_older_xfd_still_load(tmp_path):
    data = reid_features(6, 20, dim=8, n_ids=4, seed=0)
    path = tmp_path / "old.npz"
    np.savez(path, **{k: getattr(data, k) for k in ("q_feats", "g_feats", "q_pids", "g_pids", "q_camids", "g_camids")})
    loaded = load_npz(path)
    assert loaded.labelled and loaded.q_meta == {} and loaded.g_meta == {} and loaded.q_names is None
