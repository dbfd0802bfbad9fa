"""The challenge submission CSV, as the challenge's public baseline writes it (docs/protocol.md), and its checker.

- Header `row_id,query_tracklet,gallery_tracklets`; one row per query; lines end in CRLF (Python csv's default,
  which the baseline's writer uses).
- `row_id` counts from 1 across all cases.
- Cases in the order case1_aerial_to_ground, case2_ground_to_aerial, case3_aerial_to_aerial (protocols named
  A2G, G2A, A2A are those cases); any other protocol follows in the order given.
- Within a case, queries by (pid, tracklet folder name). An unlabelled split's pids are unknown: its queries go
  by (the number of the identity folder holding the tracklet folder, name), which is what the baseline's loader
  sorts by on the anonymised test split; tracklets without a numbered identity folder come last, by name.
- `gallery_tracklets`: the `top` (default 10) best gallery tracklet folder names, best first, space-separated —
  or the whole gallery when it is smaller. The whole gallery is ranked: like the baseline, the submission does
  not apply the junk rule (same pid and camid), which only the metrics use. Equal distances rank by gallery row.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Iterable

import numpy as np

from xfd.atomic import write_bytes_atomic
from xfd.eval.protocol import ProtocolData
from xfd.eval.score import Results

HEADER = ("row_id", "query_tracklet", "gallery_tracklets")
CASE_ORDER = ("case1_aerial_to_ground", "case2_ground_to_aerial", "case3_aerial_to_aerial")
CASE_OF = {"A2G": CASE_ORDER[0], "G2A": CASE_ORDER[1], "A2A": CASE_ORDER[2], **{c: c for c in CASE_ORDER}}
MAX_PROBLEMS = 50  # the checker lists this many problems, then counts the rest


def ordered_cases(names: Iterable[str]) -> list[str]:
    """Protocol names in submission order: the three challenge cases first (in case order), then the others."""
    names = list(names)
    known = sorted((n for n in names if n in CASE_OF), key=lambda n: CASE_ORDER.index(CASE_OF[n]))
    return known + [n for n in names if n not in CASE_OF]


def query_order(names: np.ndarray, pids: np.ndarray | None, folder_pids: np.ndarray | None = None) -> np.ndarray:
    """Query rows in submission order: by (pid, name); without pids by (identity folder number, name), unknown
    folders (negative) last."""
    names = [str(n) for n in names]
    if pids is not None:
        keys = [(0, int(p), n) for p, n in zip(np.asarray(pids).tolist(), names)]
    elif folder_pids is not None:
        keys = [(0, int(f), n) if f >= 0 else (1, 0, n) for f, n in zip(np.asarray(folder_pids).tolist(), names)]
    else:
        keys = [(0, 0, n) for n in names]
    return np.array(sorted(range(len(names)), key=keys.__getitem__), dtype=np.int64)


@dataclass(frozen=True)
class SubmissionCase:
    """What a submission must say about one case: its queries in submission order and its gallery's names."""

    name: str
    queries: list[str]
    gallery: list[str]

    @cached_property
    def gallery_names(self) -> frozenset[str]:
        return frozenset(self.gallery)

    @cached_property
    def query_names(self) -> frozenset[str]:
        return frozenset(self.queries)

    @classmethod
    def from_labels(cls, name: str, q_names, q_pids, q_folder_pids, g_names) -> "SubmissionCase":
        order = query_order(np.asarray(q_names), q_pids, q_folder_pids)
        return cls(name, [str(q_names[i]) for i in order], [str(g) for g in g_names])

    @classmethod
    def from_protocol(cls, data: ProtocolData) -> "SubmissionCase":
        if not data.has_names:
            raise ValueError(f"protocol {data.name}: the submission needs tracklet names (q_names, g_names)")
        return cls.from_labels(data.name, data.q_names, data.q_pids, data.q_meta.get("folder_pid"), data.g_names)


def submission_rows(protocols: dict[str, ProtocolData], results: Results,
                    top: int) -> tuple[list[tuple[str, str]], list[str]]:
    """(query name, space-separated gallery names) of every row, in submission order, and warnings: a case whose
    queries have no gallery to be ranked against has no rows (the file is then incomplete, and says so)."""
    if top < 1:
        raise ValueError(f"the submission's names per row must be >= 1, got {top}")
    if top > results.options.top:
        raise ValueError(f"{top} gallery names a row asked for, but scoring kept the best {results.options.top}")
    rows, warnings = [], []
    for name in ordered_cases(protocols):
        data, outcome = protocols[name], results.protocols[name]
        if not data.has_names:
            raise ValueError(f"protocol {name}: the submission needs tracklet names (q_names, g_names)")
        if outcome.queries is None:  # an empty side: no query, or nothing to rank them against
            if data.num_queries:
                warnings.append(f"submission: protocol {name} has {data.num_queries} queries but an empty gallery: "
                                "no rows for them, so the file is not a complete submission")
            continue
        order = query_order(data.q_names, data.q_pids, data.q_meta.get("folder_pid"))
        best = outcome.queries.top[:, : min(top, data.num_gallery)]  # (q, n)
        rows += [(str(data.q_names[q]), " ".join(data.g_names[best[q]].tolist())) for q in order]
    return rows, warnings


def write_submission(path: str | Path, protocols: dict[str, ProtocolData], results: Results,
                     top: int = 10) -> list[str]:
    """Write the CSV atomically (nothing at `path` unless it is written through); returns warnings."""
    rows, warnings = submission_rows(protocols, results, top)
    text = io.StringIO()
    writer = csv.writer(text)  # lines end in CRLF, as the baseline's csv.DictWriter writes them
    writer.writerow(HEADER)
    writer.writerows((i, query, gallery) for i, (query, gallery) in enumerate(rows, start=1))
    write_bytes_atomic(path, text.getvalue().encode("utf-8"))
    return warnings


def check_submission(path: str | Path, cases: list[SubmissionCase], top: int = 10) -> list[str]:
    """Every problem of the CSV at `path` against the cases (in submission order), each naming its line; an empty
    list means the file is valid. Checks: the header; row ids 1, 2, ...; every query of every case exactly once,
    cases in order and each case's queries in their order; min(top, gallery) names a row, each in that case's
    gallery, none twice. Rows are matched to cases by their query, so one missing row is one problem."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            table = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        return [f"{path}: cannot be read as a CSV file ({error})"]
    problems: list[str] = []
    if not table or tuple(table[0]) != HEADER:
        problems.append(f"line 1: header {table[0] if table else '(empty file)'}, expected {','.join(HEADER)}")
    expected = sum(len(case.queries) for case in cases)
    rows = table[1:]
    if len(rows) != expected:
        problems.append(f"{len(rows)} rows, expected {expected} (one per query: "
                        + ", ".join(f"{c.name} {len(c.queries)}" for c in cases) + ")")
    current = 0  # the case the rows have reached
    placed: dict[int, list[tuple[int, str]]] = {i: [] for i in range(len(cases))}  # case -> (line, query)
    for line, row in enumerate(rows, start=2):
        if len(row) != len(HEADER):
            problems.append(f"line {line}: {len(row)} fields, expected {len(HEADER)} ({','.join(HEADER)})")
            continue
        row_id, query, gallery = row
        if row_id.strip() != str(line - 1):
            problems.append(f"line {line}: row_id {row_id!r}, expected {line - 1} (row ids count from 1 across all "
                            "cases)")
        owner = _case_of(cases, query, current)
        if owner is None:
            problems.append(f"line {line}: query {query!r} is not a query of any case (" +
                            ", ".join(c.name for c in cases) + ")")
            continue
        if owner < current:
            problems.append(f"line {line}: query {query} of {cases[owner].name} after rows of "
                            f"{cases[current].name}: cases come in the order " + ", ".join(CASE_ORDER))
        current = max(current, owner)
        placed[owner].append((line, query))
        problems += _check_gallery(line, gallery, cases[owner], top)
    for i, case in enumerate(cases):
        problems += _check_case_rows(case, placed[i], len(rows) < expected)
    if len(problems) > MAX_PROBLEMS:
        problems = problems[:MAX_PROBLEMS] + [f"... and {len(problems) - MAX_PROBLEMS} more problems"]
    return problems


def _case_of(cases: list[SubmissionCase], query: str, current: int) -> int | None:
    """The case a row's query belongs to: the current one if it has that query, else the first later one, else
    an earlier one; None for a query of no case."""
    order = list(range(current, len(cases))) + list(range(current))
    return next((i for i in order if query in cases[i].query_names), None)


def _check_case_rows(case: SubmissionCase, placed: list[tuple[int, str]], short: bool) -> list[str]:
    """Each query of the case once, in the case's order."""
    problems = []
    first_line: dict[str, int] = {}
    for line, query in placed:
        if query in first_line:
            problems.append(f"line {line}: query {query} already has a row (line {first_line[query]})")
        else:
            first_line[query] = line
    missing = [q for q in case.queries if q not in first_line]
    if missing:
        problems.append(f"{case.name}: {len(missing)} queries have no row, e.g. {missing[:3]}"
                        + (" (the file ends early)" if short and missing == case.queries[-len(missing):] else ""))
    rank = {q: i for i, q in enumerate(case.queries)}
    seen = [(line, q) for q, line in sorted(first_line.items(), key=lambda item: item[1])]
    for (_, before), (line, query) in zip(seen, seen[1:]):
        if rank[query] < rank[before]:
            problems.append(f"line {line}: query {query} out of order; {case.name}'s queries come by (pid, tracklet "
                            f"name): it belongs before {before}")
            break
    return problems


def _check_gallery(line: int, gallery: str, case: SubmissionCase, top: int) -> list[str]:
    problems = []
    names = gallery.split(" ")
    want = min(top, len(case.gallery))
    if len(names) != want:
        problems.append(f"line {line}: {len(names)} gallery names, expected {want}")
    unknown = [n for n in names if n not in case.gallery_names]
    if unknown:
        problems.append(f"line {line}: {len(unknown)} name(s) not in {case.name}'s gallery, e.g. {unknown[:3]}")
    repeated = sorted(n for n, count in Counter(names).items() if count > 1)
    if repeated:
        problems.append(f"line {line}: gallery name(s) repeated within the row: {repeated[:3]}")
    return problems
