"""The challenge submission as the public baseline writes it — header, row ids from 1 across cases, case order,
queries by (pid, tracklet name), the 10 best gallery names looked up from the real ranking — and
`xfd-eval --check-submission` rejecting each kind of bad CSV with its reason."""

from __future__ import annotations

import csv
import dataclasses

import numpy as np
import pytest

from xfd.cli.eval import main
from xfd.eval.protocol import load_npz
from xfd.eval.score import ScoreOptions, score
from xfd.eval.submission import CASE_ORDER, SubmissionCase, check_submission, query_order, write_submission
from xfd.eval.synthetic import reid_features

# given out of case order on purpose: the CSV must still come as A2G, G2A, A2A
PROTOCOLS = {"A2A": 2, "A2G": 0, "G2A": 1}
QUERIES, GALLERY = 15, 40


def _protocol(name: str, seed: int):
    data = reid_features(QUERIES, GALLERY, dim=16, n_ids=12, seed=seed, name=name)
    # names whose order is not the pid order (the name starts with a number that runs against it)
    q_names = np.array([f"{seed}{99 - i:03d}_q" for i in range(QUERIES)])
    g_names = np.array([f"{name.lower()}_g{i:03d}" for i in range(GALLERY)])
    return dataclasses.replace(data, q_names=q_names, g_names=g_names)


@pytest.fixture
def files(tmp_path):
    paths = {}
    for name, seed in PROTOCOLS.items():
        paths[name] = tmp_path / f"{name}.npz"
        _protocol(name, seed).save_npz(paths[name])
    return paths


def _args(files):
    return [arg for name, path in files.items() for arg in ("--protocol", f"{name}={path}")]


def _read(path):
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def _write(path, rows):
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)


def test_the_csv_is_the_baselines(files, tmp_path):
    out = tmp_path / "submission.csv"
    assert main(_args(files) + ["--csv", str(out), "--no-progress"]) == 0
    raw = out.read_bytes()
    assert raw.startswith(b"row_id,query_tracklet,gallery_tracklets\r\n") and raw.count(b"\r\n") == 1 + 3 * QUERIES
    rows = _read(out)
    assert rows[0] == ["row_id", "query_tracklet", "gallery_tracklets"]
    body = rows[1:]
    assert [r[0] for r in body] == [str(i) for i in range(1, 3 * QUERIES + 1)]  # from 1, across the cases
    for position, name in enumerate(["A2G", "G2A", "A2A"]):  # case1, case2, case3
        data = load_npz(files[name], name)
        block = body[position * QUERIES:(position + 1) * QUERIES]
        expected = sorted(range(QUERIES), key=lambda i: (int(data.q_pids[i]), str(data.q_names[i])))
        assert [r[1] for r in block] == [str(data.q_names[i]) for i in expected]
        assert [r[1] for r in block] != sorted(r[1] for r in block)  # the pid order, not the name order
        for (_, query, gallery), q in zip(block, expected):
            distances = 1 - data.g_feats @ data.q_feats[q]  # (G,) the plain ranking, looked up by name
            best = np.argsort(distances, kind="stable")[:10]
            assert gallery.split(" ") == [str(data.g_names[g]) for g in best], (name, query)
    assert main(["--check-submission", str(out)] + _args(files)) == 0


def test_csv_top_and_a_small_gallery(files, tmp_path):
    out = tmp_path / "s.csv"
    assert main(_args(files) + ["--csv", str(out), "--csv-top", "3", "--no-progress"]) == 0
    assert {len(r[2].split(" ")) for r in _read(out)[1:]} == {3}
    assert main(["--check-submission", str(out), "--csv-top", "3"] + _args(files)) == 0
    assert main(["--check-submission", str(out)] + _args(files)) == 1  # 3 names where 10 are due
    small = dataclasses.replace(_protocol("A2G", 0), g_feats=_protocol("A2G", 0).g_feats[:4],
                                g_pids=_protocol("A2G", 0).g_pids[:4], g_camids=_protocol("A2G", 0).g_camids[:4],
                                g_names=_protocol("A2G", 0).g_names[:4])
    results = score([small], ScoreOptions(device="cpu"))
    write_submission(tmp_path / "small.csv", {"A2G": small}, results)
    assert {len(r[2].split(" ")) for r in _read(tmp_path / "small.csv")[1:]} == {4}  # the whole gallery of 4


def test_query_order_of_unlabelled_splits():
    names = np.array(["b", "a", "c", "d"])
    assert query_order(names, np.array([2, 2, 1, 0])).tolist() == [3, 2, 1, 0]
    assert query_order(names, None, np.array([5, 5, -1, 3])).tolist() == [3, 1, 0, 2]  # unknown folder last
    assert query_order(names, None, None).tolist() == [1, 0, 2, 3]


@pytest.fixture
def valid(files, tmp_path):
    out = tmp_path / "valid.csv"
    assert main(_args(files) + ["--csv", str(out), "--no-progress"]) == 0
    return _read(out)


def _check(files, tmp_path, rows, capsys) -> str:
    path = tmp_path / "bad.csv"
    _write(path, rows)
    assert main(["--check-submission", str(path)] + _args(files)) == 1
    err = capsys.readouterr().err
    assert "NOT a valid submission" in err
    return err


def test_check_submission_rejects_each_kind_of_bad_csv(files, tmp_path, valid, capsys):
    header, body = valid[0], valid[1:]
    cases = {name: SubmissionCase.from_protocol(load_npz(files[name], name)) for name in PROTOCOLS}

    err = _check(files, tmp_path, [["row_id", "case", "query_tracklet", "ranked_gallery_tracklets"]] + body, capsys)
    assert "line 1: header" in err and "expected row_id,query_tracklet,gallery_tracklets" in err

    shifted = [header] + [[str(int(r[0]) - 1), r[1], r[2]] for r in body]  # counted from 0
    assert "line 2: row_id '0', expected 1" in _check(files, tmp_path, shifted, capsys)

    missing = [header] + body[:4] + [[str(int(r[0]) - 1), r[1], r[2]] for r in body[5:]]
    err = _check(files, tmp_path, missing, capsys)
    assert f"{3 * QUERIES - 1} rows, expected {3 * QUERIES}" in err
    assert f"A2G: 1 queries have no row, e.g. ['{body[4][1]}']" in err and "(2 problem(s))" in err

    twice = [header] + body[:5] + [[body[5][0], body[4][1], body[5][2]]] + body[6:]
    err = _check(files, tmp_path, twice, capsys)
    assert f"line 7: query {body[4][1]} already has a row (line 6)" in err
    assert f"A2G: 1 queries have no row, e.g. ['{body[5][1]}']" in err

    swapped = [header] + [[str(i), r[1], r[2]] for i, r in enumerate(body[QUERIES:2 * QUERIES] + body[:QUERIES]
                                                                        + body[2 * QUERIES:], start=1)]
    err = _check(files, tmp_path, swapped, capsys)
    assert f"line {QUERIES + 2}: query {body[0][1]} of A2G after rows of G2A: cases come in the order " \
        + ", ".join(CASE_ORDER) in err

    reordered = [header] + [[r[0], q[1], q[2]] for r, q in zip(body[:2], body[1::-1])] + body[2:]
    err = _check(files, tmp_path, reordered, capsys)
    assert f"line 3: query {body[0][1]} out of order; A2G's queries come by (pid, tracklet name): it belongs " \
           f"before {body[1][1]}" in err

    stranger = [header] + [[body[0][0], "nobody", body[0][2]]] + body[1:]
    assert "line 2: query 'nobody' is not a query of any case" in _check(files, tmp_path, stranger, capsys)

    foreign = cases["G2A"].gallery[0]
    wrong_name = [header] + [[body[0][0], body[0][1], " ".join([foreign] + body[0][2].split(" ")[1:])]] + body[1:]
    assert f"line 2: 1 name(s) not in A2G's gallery, e.g. ['{foreign}']" in _check(files, tmp_path, wrong_name, capsys)

    names = body[0][2].split(" ")
    repeated = [header] + [[body[0][0], body[0][1], " ".join(names[:9] + names[:1])]] + body[1:]
    assert f"line 2: gallery name(s) repeated within the row: ['{names[0]}']" in _check(files, tmp_path, repeated,
                                                                                        capsys)

    short = [header] + [[body[0][0], body[0][1], " ".join(names[:9])]] + body[1:]
    assert "line 2: 9 gallery names, expected 10" in _check(files, tmp_path, short, capsys)

    extra_field = [header] + [body[0] + ["x"]] + body[1:]
    assert "line 2: 4 fields, expected 3" in _check(files, tmp_path, extra_field, capsys)

    extra_row = [header] + body + [[str(len(body) + 1), body[0][1], body[0][2]]]
    err = _check(files, tmp_path, extra_row, capsys)
    assert f"{len(body) + 1} rows, expected {len(body)}" in err
    assert f"line {len(body) + 2}: query {body[0][1]} already has a row (line 2)" in err


def test_check_submission_needs_its_inputs(files, tmp_path, valid, capsys):
    path = tmp_path / "v.csv"
    _write(path, valid)
    assert main(["--check-submission", str(path)]) == 2
    assert "give a features file or at least one --protocol" in capsys.readouterr().err
    assert main(["--check-submission", str(path), "--data", str(tmp_path)] + _args(files)) == 2
    assert check_submission(tmp_path / "nothing.csv", []) and "cannot be read" in check_submission(
        tmp_path / "nothing.csv", [])[0]
