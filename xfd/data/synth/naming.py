"""DetReIDX names for synthetic tracklets: split folders, tracklet folders and frame file names.

The names are the contract with `xfd.data.metadata.parse_detreidx_frame` (docs/datasets.md):
- aerial, 13 fields: `{pid}_{dd}_{mm}_{yyyy}_{hh}_{mi}_{height}_{distance}_{angle}_{location}_{attr}_S{s}_{frame}`,
  e.g. `0004_23_10_2024_09_18_5.8_10_30_3_walk_S1_00012.jpg` — height/distance/angle at fields 6/7/8, printed
  like the capture-point table (`f"{x:g}"`: 5.8, 10, 11.5, 120);
- ground, 7 fields: `{pid}_{dd}_{mm}_{yyyy}_G{camera}_S{s}_{frame}`, e.g. `0004_23_10_2024_G2_S1_00012.jpg`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from ..metadata import CAPTURE_POINTS
from .identity import Identity, Outfit

TRAIN = "train"
# case folder -> (query platform, gallery platform)
CASES: dict[str, tuple[str, str]] = {
    "case1_aerial_to_ground": ("aerial", "ground"),
    "case2_ground_to_aerial": ("ground", "aerial"),
    "case3_aerial_to_aerial": ("aerial", "aerial"),
}
ROLES = ("query", "gallery")
ACTION = "walk"


@dataclass(frozen=True)
class TrackletSpec:
    """Everything needed to render one tracklet and name its files; built by the planner, rendered by a worker."""

    split: str  # "train" or a CASES key
    role: str | None  # "query" / "gallery" in a case, None in train
    pid: int
    tracklet_id: int
    session: int
    platform: str  # "ground" / "aerial"
    ground_camera: int | None  # 1 side view, 2 frontal
    capture_point: int | None  # index into CAPTURE_POINTS
    day: date
    time: tuple[int, int]  # hour, minute
    location: int
    sun: tuple[float, float] | None  # (azimuth, elevation) in degrees on a sunny session, else None
    first_frame: int
    frames: int
    identity: Identity
    outfit: Outfit

    @property
    def folder(self) -> str:
        """Relative folder of the tracklet: `<split>[/<role>]/<PID>/<PID>_<TRACKLETID>`."""
        split = self.split if self.role is None else f"{self.split}/{self.role}"
        return f"{split}/{self.pid:04d}/{self.pid:04d}_{self.tracklet_id:04d}"

    def frame_name(self, index: int) -> str:
        """File name of frame `index` (0-based within the tracklet)."""
        head = f"{self.pid:04d}_{self.day.day:02d}_{self.day.month:02d}_{self.day.year:04d}"
        number = self.first_frame + index
        if self.platform == "ground":
            return f"{head}_G{self.ground_camera}_S{self.session}_{number:05d}.jpg"
        angle, height, distance = CAPTURE_POINTS[self.capture_point]
        hour, minute = self.time
        return (f"{head}_{hour:02d}_{minute:02d}_{height:g}_{distance:g}_{angle:g}_{self.location}_{ACTION}"
                f"_S{self.session}_{number:05d}.jpg")
