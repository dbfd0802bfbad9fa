"""Per-condition analysis: where does matching break? Metrics broken down by the query's capture conditions.

Conditions (from the features' per-tracklet metadata columns, `xfd.inference.TRACKLET_COLUMNS`):
- altitude, distance, pitch angle: the query's capture-point bins (ground queries, and aerial data without
  capture metadata, form their own "none" group); each group is labelled with its queries' raw values;
- platform: ground or aerial query;
- match session: a query's same-session matches against its cross-session ones (DetReIDX sessions are days
  with a change of clothes). "cross-session" scores each query as if its same-session matches were junk
  (removed from the ranking), "same-session" the other way round, as clothes-changing benchmarks do; a query
  counts in a row when it has at least one match of that kind. The match ranks the metrics kept make this
  exact without a second pass: removing k matches above a match moves it up k places.

Each cell holds the valid queries, mAP and rank-1 with bootstrap intervals; a cell with fewer than
`min_queries` queries is marked "few", never left out. Rows are computed per protocol and pooled over the
protocols ("all").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xfd.data.encoding import AERIAL, BIN_FIELDS, BIN_LIMITS, GROUND, UNKNOWN
from xfd.eval.bootstrap import BootstrapOptions, Interval, intervals
from xfd.eval.metrics import QueryScores, average_precision
from xfd.eval.protocol import ProtocolData

ALL = "all"
# condition -> (bin column, raw-value column, unit of the raw value)
BIN_CONDITIONS = {"altitude": ("altitude_bin", "height", " m"), "distance": ("distance_bin", "distance", " m"),
                  "pitch angle": ("angle_bin", "angle", "°")}
NO_CAPTURE_BIN = {f"{name}_bin": limit for name, limit in zip(BIN_FIELDS, BIN_LIMITS)}  # ground / no metadata
SAME, CROSS = "same session", "cross session"


@dataclass(frozen=True)
class ConditionCell:
    """One condition value on one protocol (or all pooled): valid queries, mAP and rank-1 with intervals."""

    queries: int
    mAP: float
    rank1: float
    intervals: dict[str, Interval]
    few: bool

    def to_dict(self) -> dict:
        return {"queries": self.queries, "mAP": self.mAP, "rank1": self.rank1, "few": self.few,
                "ci": {k: v.to_list() for k, v in self.intervals.items()}}


@dataclass(frozen=True)
class ConditionRow:
    """One value of one condition: its label, a position for plots (mean raw value, None without one) and a cell
    per protocol that has such queries, plus ALL."""

    condition: str
    value: str
    x: float | None
    cells: dict[str, ConditionCell]

    def to_dict(self) -> dict:
        return {"condition": self.condition, "value": self.value, "x": self.x,
                "cells": {k: v.to_dict() for k, v in self.cells.items()}}


@dataclass(frozen=True)
class _Queries:
    """The valid queries of one protocol under one view: per-query AP and rank-1 hit, and their group keys."""

    ap: np.ndarray  # (n,)
    hit1: np.ndarray  # (n,) 0/1
    groups: dict[str, np.ndarray]  # condition -> (n,) group key
    raw: dict[str, np.ndarray]  # condition -> (n,) raw value (NaN unknown)


def condition_rows(protocols: dict[str, ProtocolData], scores: dict[str, QueryScores], ap_mode: str,
                   bootstrap: BootstrapOptions, min_queries: int = 10) -> list[ConditionRow]:
    """Rows for every condition the protocols' metadata supports (none without query metadata)."""
    views = {name: _query_view(protocols[name], scores[name]) for name in scores}
    sessions = {name: _session_views(protocols[name], scores[name], ap_mode) for name in scores}
    rows = []
    for condition in (*BIN_CONDITIONS, "platform"):
        present = {name: v for name, v in views.items() if v is not None and condition in v.groups}
        keys = sorted({int(k) for v in present.values() for k in np.unique(v.groups[condition])})
        for key in keys:
            parts = {name: np.flatnonzero(v.groups[condition] == key) for name, v in present.items()}
            raw = np.concatenate([present[n].raw[condition][i] for n, i in parts.items()])
            rows.append(_row(condition, _label(condition, key, raw), _position(raw),
                             {n: (present[n], i) for n, i in parts.items()}, bootstrap, min_queries))
    for label in (SAME, CROSS):
        present = {name: s[label] for name, s in sessions.items() if s is not None}
        if any(v.ap.size for v in present.values()):
            rows.append(_row("match session", label, None, {n: (v, np.arange(v.ap.size)) for n, v in present.items()},
                             bootstrap, min_queries))
    return rows


def _row(condition: str, value: str, x: float | None, parts: dict[str, tuple[_Queries, np.ndarray]],
         bootstrap: BootstrapOptions, min_queries: int) -> ConditionRow:
    cells = {}
    for name, (view, rows) in parts.items():
        if rows.size:
            cells[name] = _cell(view.ap[rows], view.hit1[rows], bootstrap, min_queries)
    if len(cells) == 1:  # one protocol has such queries: pooled, they are the same queries (and resamples)
        cells[ALL] = next(iter(cells.values()))
    else:
        ap = np.concatenate([view.ap[rows] for view, rows in parts.values()])
        hit1 = np.concatenate([view.hit1[rows] for view, rows in parts.values()])
        cells[ALL] = _cell(ap, hit1, bootstrap, min_queries)
    return ConditionRow(condition, value, x, cells)


def _cell(ap: np.ndarray, hit1: np.ndarray, bootstrap: BootstrapOptions, min_queries: int) -> ConditionCell:
    ci = intervals([np.stack([ap, hit1], axis=1)], bootstrap)
    return ConditionCell(int(ap.size), float(ap.mean()), float(hit1.mean()), {"mAP": ci[0], "rank1": ci[1]},
                         bool(ap.size < min_queries))


def _query_view(data: ProtocolData, scores: QueryScores) -> _Queries | None:
    """The valid queries' AP, rank-1 hit and condition keys; None when the features carry no query metadata."""
    meta = data.q_meta
    valid = scores.valid
    groups, raw = {}, {}
    for condition, (bin_column, raw_column, _) in BIN_CONDITIONS.items():
        if bin_column in meta:
            groups[condition] = np.asarray(meta[bin_column])[valid].astype(np.int64)
            raw[condition] = (np.asarray(meta[raw_column], float)[valid] if raw_column in meta
                              else np.full(int(valid.sum()), np.nan))
    if "platform" in meta:
        groups["platform"] = np.asarray(meta["platform"])[valid].astype(np.int64)
        raw["platform"] = np.full(int(valid.sum()), np.nan)
    if not groups:
        return None
    return _Queries(scores.ap[valid], (scores.first_match[valid] == 1).astype(float), groups, raw)


def _session_views(data: ProtocolData, scores: QueryScores, ap_mode: str) -> dict[str, _Queries] | None:
    """Same-session and cross-session scores of the queries (None without session metadata on both sides)."""
    if "session" not in data.q_meta or "session" not in data.g_meta:
        return None
    q_session, g_session = np.asarray(data.q_meta["session"]), np.asarray(data.g_meta["session"])
    out = {SAME: ([], []), CROSS: ([], [])}
    for q in np.flatnonzero(scores.valid):
        rows, ranks = scores.match_rows[q], scores.match_ranks[q]
        if q_session[q] == UNKNOWN:
            continue
        sessions = g_session[rows]
        known = sessions != UNKNOWN
        for label, keep in ((SAME, known & (sessions == q_session[q])), (CROSS, known & (sessions != q_session[q]))):
            if keep.any():
                kept = ranks[keep] - np.cumsum(~keep)[keep]  # the other matches removed as junk
                out[label][0].append(average_precision(kept, ap_mode))
                out[label][1].append(float(kept[0] == 1))
    return {label: _Queries(np.array(ap, float), np.array(hit1, float), {}, {}) for label, (ap, hit1) in out.items()}


def _label(condition: str, key: int, raw: np.ndarray) -> str:
    if condition == "platform":
        return {GROUND: "ground", AERIAL: "aerial"}.get(key, f"platform {key}")
    if key == NO_CAPTURE_BIN[BIN_CONDITIONS[condition][0]]:
        return "none (ground or no capture metadata)"
    unit = BIN_CONDITIONS[condition][2]
    known = raw[np.isfinite(raw)]
    if not known.size:
        return f"bin {key}"
    low, high = float(known.min()), float(known.max())
    return f"bin {key}: {low:g}{unit}" if low == high else f"bin {key}: {low:g}–{high:g}{unit}"


def _position(raw: np.ndarray) -> float | None:
    known = raw[np.isfinite(raw)]
    return float(known.mean()) if known.size else None
