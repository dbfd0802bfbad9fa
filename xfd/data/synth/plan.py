"""The dataset plan: identities, their two sessions, and every tracklet's split, camera and length.

Planning is cheap and runs in the parent process; rendering a tracklet needs only its `TrackletSpec` and the seed,
so output does not depend on how tracklets are spread over workers. Every random choice comes from a generator
seeded by `numpy.random.SeedSequence([seed, purpose, ...])`, so one identity's body does not change when, say,
the frame-count range changes.

Layout (docs/datasets.md): train and test identities are disjoint. A train identity gets one ground tracklet and
`train_aerial` aerial tracklets from distinct capture points in each session (2 + 2·train_aerial: 4 by default;
the demo uses 2, so that training sees aerial pairs of one outfit from two capture points, as A2A asks of it).
A test identity gets one query and one gallery tracklet in each case (6):
case1 aerial query / ground gallery, case2 ground / aerial, case3 aerial / aerial from two different capture
points — so every query has a match with another camid under the capture-point rule. In each case, half of the
test identities (balanced, shuffled) are matched across sessions — a clothing change — and half within one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np

from ..metadata import CAPTURE_POINTS
from .identity import Identity, Outfit, sample_identity, sample_outfit
from .naming import CASES, ROLES, TRAIN, TrackletSpec
from .scene import LOCATIONS

MAX_PID = 9999  # PIDs are printed with 4 digits
_FIRST_DAY = date(2024, 9, 2)
# SeedSequence purposes
_IDENTITY, _LAYOUT, _TRACKLET_IDS = 1, 2, 3


@dataclass(frozen=True)
class SynthConfig:
    """What the dataset should contain; `xfd-synth`'s arguments less the output and machine options."""

    ids: int = 64
    test_ids: int = 32
    seed: int = 0
    min_frames: int = 24
    max_frames: int = 80
    jpeg_quality: int = 90
    degraded_fraction: float = 0.2
    fps: float = 10.0
    train_aerial: int = 1  # aerial tracklets per train identity and session, from distinct capture points

    def __post_init__(self):
        if self.ids < 2 or self.test_ids < 2:
            raise ValueError(f"need at least 2 train and 2 test identities, got {self.ids} and {self.test_ids}")
        if self.ids + self.test_ids > MAX_PID:
            raise ValueError(f"at most {MAX_PID} identities in all (4-digit PIDs), got {self.ids + self.test_ids}")
        if self.min_frames < 1:
            raise ValueError(f"min frames must be at least 1, got {self.min_frames}")
        if self.min_frames > self.max_frames:
            raise ValueError(f"min frames ({self.min_frames}) must not exceed max frames ({self.max_frames})")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"JPEG quality must be at least 1 and at most 100, got {self.jpeg_quality}")
        if not 0.0 <= self.degraded_fraction <= 1.0:
            raise ValueError(f"degraded_fraction must be in [0, 1], got {self.degraded_fraction}")
        if not 1 <= self.train_aerial <= len(CAPTURE_POINTS):
            raise ValueError(f"train_aerial must be in [1, {len(CAPTURE_POINTS)}], got {self.train_aerial}")
        if self.seed < 0:
            raise ValueError(f"seed must be non-negative, got {self.seed}")


@dataclass(frozen=True)
class Person:
    """One identity and what stays fixed within each of its two sessions."""

    pid: int
    split: str  # "train" or "test"
    identity: Identity
    outfits: tuple[Outfit, Outfit]
    days: tuple[date, date]
    locations: tuple[int, int]
    suns: tuple[tuple[float, float] | None, tuple[float, float] | None]


def _rng(config: SynthConfig, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([config.seed, *keys]))


def _person(config: SynthConfig, pid: int, split: str) -> Person:
    rng = _rng(config, _IDENTITY, pid)
    identity = sample_identity(rng)
    first = sample_outfit(rng)
    second = sample_outfit(rng, previous=first)
    day1 = _FIRST_DAY + timedelta(days=int(rng.integers(0, 80)))
    day2 = day1 + timedelta(days=int(rng.integers(1, 15)))
    locations = tuple(int(rng.choice(LOCATIONS)) for _ in range(2))
    suns = tuple((float(rng.uniform(0, 360)), float(rng.uniform(25, 65))) if rng.uniform() < 0.6 else None
                 for _ in range(2))
    return Person(pid, split, identity, (first, second), (day1, day2), locations, suns)


def _tracklet_ids(config: SynthConfig, count: int) -> list[int]:
    """`count` distinct 4-digit tracklet ids (wider when a dataset needs more)."""
    low, high = (1000, 10000) if count <= 4500 else (1, 10 ** len(str(2 * count)))
    return [int(t) for t in _rng(config, _TRACKLET_IDS).choice(np.arange(low, high), size=count, replace=False)]


def build_plan(config: SynthConfig) -> tuple[list[Person], list[TrackletSpec]]:
    """All identities and all tracklet specs, in a fixed order."""
    layout = _rng(config, _LAYOUT)
    pids = layout.permutation(np.arange(1, config.ids + config.test_ids + 1))
    train_pids, test_pids = sorted(pids[: config.ids].tolist()), sorted(pids[config.ids:].tolist())
    people = [_person(config, pid, "train") for pid in train_pids] + [_person(config, pid, "test") for pid in test_pids]
    by_pid = {person.pid: person for person in people}

    # (split, role, pid, session, platform, capture point or ground camera)
    slots: list[tuple] = []
    for pid in train_pids:
        for session in (1, 2):
            slots.append((TRAIN, None, pid, session, "ground", int(layout.integers(1, 3))))
            points = ([layout.integers(0, len(CAPTURE_POINTS))] if config.train_aerial == 1 else
                      layout.choice(len(CAPTURE_POINTS), size=config.train_aerial, replace=False))
            slots.extend((TRAIN, None, pid, session, "aerial", int(point)) for point in points)
    for case, platforms in CASES.items():
        crossed = layout.permutation(np.arange(len(test_pids)) % 2 == 0)
        for pid, cross in zip(test_pids, crossed):
            query_session = int(layout.integers(1, 3))
            sessions = (query_session, 3 - query_session if cross else query_session)
            points = layout.choice(len(CAPTURE_POINTS), size=2, replace=False)  # distinct: A2A needs two camids
            for role, session, platform, point in zip(ROLES, sessions, platforms, points):
                camera = int(point) if platform == "aerial" else int(layout.integers(1, 3))
                slots.append((case, role, pid, session, platform, camera))

    ids = _tracklet_ids(config, len(slots))
    specs = []
    for (split, role, pid, session, platform, camera), tracklet_id in zip(slots, ids):
        person = by_pid[pid]
        specs.append(TrackletSpec(
            split=split, role=role, pid=pid, tracklet_id=tracklet_id, session=session, platform=platform,
            ground_camera=camera if platform == "ground" else None,
            capture_point=camera if platform == "aerial" else None,
            day=person.days[session - 1],
            time=(int(layout.integers(8, 18)), int(layout.integers(0, 60))),
            location=person.locations[session - 1],
            sun=person.suns[session - 1],
            first_frame=int(layout.integers(0, 2000)),
            frames=int(layout.integers(config.min_frames, config.max_frames + 1)),
            identity=person.identity,
            outfit=person.outfits[session - 1],
        ))
    return people, specs
