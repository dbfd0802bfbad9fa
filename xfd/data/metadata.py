"""Capture metadata: DetReIDX / MARS frame-name parsing, camera ids and the bins used for conditioning.

DetReIDX has no annotation files: identity, platform and capture point come from the frame names.
Outdoor (aerial) names split on `_` carry height, distance and pitch angle in fields 6, 7 and 8 (0-based), e.g.
`0004_23_10_2024_09_18_5.8_10_30_3_walk_S1_00012.jpg`; ground names have fewer than 8 fields. A name that
fits neither form, or whose fields do not parse, is an error naming the file (the public baseline silently
substitutes 30/10/30 — we never do).

Bins (stored in every shard sample; the model embeds them):
- altitude: 18 log-spaced bins over [5 m, 130 m) (resolution matters most close to the ground);
- distance: 18 uniform bins over [0 m, 126 m), 7 m wide;
- angle:    3 bins, pitch < 45° (the 30° points), < 75° (60°), else (90°, nadir);
- ground frames get their own bin in each: index 18 / 18 / 3. Values outside a range clamp to its end bins;
  the raw values are kept beside the bins.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .errors import DataError

ALTITUDE_BINS = 18
DISTANCE_BINS = 18
ANGLE_BINS = 3
GROUND_ALTITUDE_BIN = ALTITUDE_BINS
GROUND_DISTANCE_BIN = DISTANCE_BINS
GROUND_ANGLE_BIN = ANGLE_BINS

_ALTITUDE_RANGE_M = (5.0, 130.0)
_DISTANCE_BIN_WIDTH_M = 7.0

# DetReIDX's 18 capture points: (pitch angle °, height m, distance m).
CAPTURE_POINTS: tuple[tuple[int, float, float], ...] = (
    (30, 5.8, 10), (30, 11.5, 20), (30, 17.3, 30), (30, 23.1, 40), (30, 40, 80), (30, 60, 120),
    (60, 15, 10), (60, 30, 20), (60, 45, 30), (60, 60, 40), (60, 75, 80), (60, 90, 120),
    (90, 10, 0), (90, 20, 0), (90, 30, 0), (90, 40, 0), (90, 80, 0), (90, 120, 0),
)

PLATFORMS = ("ground", "aerial")

# camid scheme of the `capture-point` rule: ground cameras 0..9 (G<n> token - 1, or 0), aerial 10 + index
# of the capture point, so that in A2A the same person seen from the same capture point is junk.
_AERIAL_CAMID_BASE = 10
CAMID_RULES = ("capture-point", "baseline")


def altitude_bin(height_m: float) -> int:
    low, high = _ALTITUDE_RANGE_M
    fraction = math.log(max(height_m, low) / low) / math.log(high / low)
    return min(ALTITUDE_BINS - 1, max(0, int(fraction * ALTITUDE_BINS)))


def distance_bin(distance_m: float) -> int:
    return min(DISTANCE_BINS - 1, max(0, int(distance_m / _DISTANCE_BIN_WIDTH_M)))


def angle_bin(angle_deg: float) -> int:
    if angle_deg < 45:
        return 0
    return 1 if angle_deg < 75 else 2


def no_metadata_bins() -> dict:
    """The last bin of each: no capture metadata (ground frames, or aerial data whose names carry none)."""
    return {"altitude": GROUND_ALTITUDE_BIN, "distance": GROUND_DISTANCE_BIN, "angle": GROUND_ANGLE_BIN}


def capture_bins(platform: str, height_m: float, distance_m: float, angle_deg: float) -> dict:
    """The three conditioning bins for one tracklet; ground gets its own bin in each."""
    if platform == "ground":
        return no_metadata_bins()
    return {"altitude": altitude_bin(height_m), "distance": distance_bin(distance_m), "angle": angle_bin(angle_deg)}


def capture_point_index(angle_deg: float, height_m: float, distance_m: float) -> int | None:
    """Index into CAPTURE_POINTS of the point matching (angle, height, distance), or None."""
    for index, (angle, height, distance) in enumerate(CAPTURE_POINTS):
        if abs(angle - angle_deg) < 0.5 and abs(height - height_m) < 0.05 and abs(distance - distance_m) < 0.05:
            return index
    return None


@dataclass(frozen=True)
class DetReIDXFrame:
    """What one DetReIDX frame name says."""

    pid: int | None  # None: an unlabelled split's name whose first field is not a number
    platform: str
    height: float
    distance: float
    angle: float
    session: int | None
    ground_camera: int | None
    fields: tuple[str, ...]

    @property
    def capture_key(self) -> tuple:
        """Frames of one tracklet must agree on this."""
        return (self.platform, self.height, self.distance, self.angle, self.session, self.ground_camera)


_SESSION_FIELD = re.compile(r"^S(\d+)$")
_GROUND_CAMERA_FIELD = re.compile(r"^G(\d+)$")


def _parse_float(text: str, what: str, item: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DataError(item, f"cannot parse {what} from field {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise DataError(item, f"{what} must be a finite non-negative number, got {text!r}")
    return value


def parse_detreidx_frame(file_name: str, require_pid: bool = True) -> DetReIDXFrame:
    """Parse a DetReIDX frame file name; raise DataError naming the file if it does not fit the format.

    `require_pid=False` (unlabelled splits, whose identities are hidden) accepts any first field and gives pid
    None when it is not a number; every other field is parsed as usual, and a name of fewer than 4 fields (not
    even pid and date, e.g. a bare frame counter) is an error: it says nothing, not even "ground"."""
    stem = file_name.rsplit(".", 1)[0]
    fields = tuple(stem.split("_"))
    if not require_pid and len(fields) < 4:
        raise DataError(file_name, "an anonymised name without the DetReIDX fields (pid_dd_mm_yyyy_...)")
    if fields[0].isdigit():
        pid = int(fields[0])
    elif require_pid:
        raise DataError(file_name, f"frame name must start with the numeric PID, got {fields[0]!r}")
    else:
        pid = None
    sessions = [int(m.group(1)) for f in fields if (m := _SESSION_FIELD.match(f))]
    session = sessions[-1] if sessions else None
    if len(fields) >= 9:
        height = _parse_float(fields[6], "drone height (field 6)", file_name)
        distance = _parse_float(fields[7], "distance (field 7)", file_name)
        angle = _parse_float(fields[8], "angle (field 8)", file_name)
        if angle > 90:
            raise DataError(file_name, f"angle (field 8) must be at most 90 degrees, got {fields[8]!r}")
        return DetReIDXFrame(pid, "aerial", height, distance, angle, session, None, fields)
    if len(fields) < 8:
        cameras = [int(m.group(1)) for f in fields[1:] if (m := _GROUND_CAMERA_FIELD.match(f))]
        camera = cameras[-1] if cameras else None
        return DetReIDXFrame(pid, "ground", 0.0, 0.0, 0.0, session, camera, fields)
    raise DataError(file_name, "8 '_'-separated fields fits neither the ground (< 8) nor the aerial (>= 9) form")


def detreidx_camid(frame: DetReIDXFrame, rule: str = "capture-point") -> int:
    """Camera id used by the evaluation junk rule (same pid and same camid are excluded).

    `capture-point` (default): ground cameras 0..9 (G<n> gives n-1, else 0), aerial 10 + capture-point index.
    `baseline`: the public baseline's rule, ground 0, aerial 1 if fields[-2] == '1' else 2 (docs/datasets.md calls
    it uncertain; the raw fields are kept in the metadata either way).
    """
    if rule not in CAMID_RULES:
        raise ValueError(f"camid rule must be one of {CAMID_RULES}, got {rule!r}")
    if rule == "baseline":
        if frame.platform == "ground":
            return 0
        return 1 if frame.fields[-2] == "1" else 2
    if frame.platform == "ground":
        return 0 if frame.ground_camera is None else max(0, frame.ground_camera - 1)
    index = capture_point_index(frame.angle, frame.height, frame.distance)
    if index is None:
        raise DataError(
            "_".join(frame.fields),
            f"(angle {frame.angle}, height {frame.height}, distance {frame.distance}) is not one of the 18 "
            "DetReIDX capture points; use --camid-rule baseline for other capture geometries",
        )
    return _AERIAL_CAMID_BASE + index


@dataclass(frozen=True)
class MarsFrame:
    """What a MARS / G2A-VReID frame name (`0001C1T0001F001.jpg`, v2: 5-digit pid) says."""

    pid: int
    camera: int
    tracklet: int
    frame: int


_MARS_NAME = re.compile(r"^(?P<pid>[0-9-]{4,5})C(?P<camera>\d)T(?P<tracklet>\d{4})F(?P<frame>\d{3,})\.jpg$")


def parse_mars_frame(file_name: str, pid_digits: int = 4) -> MarsFrame:
    """Parse a MARS-style frame name; pid is `pid_digits` wide (4 MARS / G2A v1, 5 G2A v2); '00-1' is junk (-1)."""
    match = _MARS_NAME.match(file_name)
    if match is None or len(match.group("pid")) != pid_digits:
        raise DataError(file_name, f"not a MARS-style frame name with a {pid_digits}-digit pid (e.g. 0001C1T0001F001.jpg)")
    pid_text = match.group("pid")
    if "-" in pid_text:
        if pid_text.lstrip("0") != "-1":
            raise DataError(file_name, f"pid field {pid_text!r} is neither digits nor the junk id -1")
        pid = -1
    else:
        pid = int(pid_text)
    return MarsFrame(pid, int(match.group("camera")), int(match.group("tracklet")), int(match.group("frame")))
