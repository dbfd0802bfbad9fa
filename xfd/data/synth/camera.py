"""Cameras: how big, from where and how cleanly a person is seen, per tracklet.

Ground cameras (DetReIDX G1 side view, G2 frontal) look almost level from a few metres: a 1.7 m person is 80-175 px tall
and sharp. A drone at one of the 18 capture points looks down at the capture point's pitch; the person's apparent
size falls with the slant range R = sqrt(height² + distance²) as a power law through two anchors (a 1.7 m person
is ~120 px tall at R = 11.6 m, the nearest 30° point, and ~20 px at R = 134 m, the farthest) — softer than a
fixed lens's 1/R, as if the camera zoomed a little for far points, and keeping every capture point distinct
instead of clamping the far ones to one size. Far points also add sensor noise, optical blur and haze.

A tracklet's crop is a detector-style box around the projected figure plus a margin, fixed for the tracklet;
across frames the box jitters (AR(1) detector noise) and the background scrolls as the person walks (reduced by
a parallax/follow factor: ground backdrops are further away than the person, drones follow their target).
Small crops are rendered `supersample` times larger and box-reduced, which anti-aliases them like a real sensor.
Illumination, white balance and haze are affine per channel, so they are applied to the scene's colours (canvas,
clothes, skin) before drawing rather than to every finished frame — the same image, fewer passes per frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..metadata import CAPTURE_POINTS
from .figure import Figure
from .identity import Color
from .render import extent, project, view_basis

PERSON_HEIGHT_M = 1.7
_NEAR_RANGE_M, _NEAR_PX = math.hypot(5.8, 10.0), 120.0
_FAR_RANGE_M, _FAR_PX = math.hypot(60.0, 120.0), 20.0
_SIZE_EXPONENT = math.log(_NEAR_PX / _FAR_PX) / math.log(_FAR_RANGE_M / _NEAR_RANGE_M)
_PX_LIMITS = (12.0, 145.0)
_MIN_SIDE_PX = 12
HAZE_COLOR = np.array((198, 204, 212), np.float32)


def slant_range(height_m: float, distance_m: float) -> float:
    return math.hypot(height_m, distance_m)


def aerial_person_px(height_m: float, distance_m: float) -> float:
    """Apparent height in pixels of a 1.7 m person standing upright at this capture point's range."""
    ratio = slant_range(height_m, distance_m) / _NEAR_RANGE_M
    return float(np.clip(_NEAR_PX * ratio ** -_SIZE_EXPONENT, *_PX_LIMITS))


@dataclass(frozen=True)
class View:
    """Everything about how one tracklet is imaged; fixed for the tracklet."""

    elevation: float  # degrees above level
    azimuth: float  # degrees; 0 = camera in front of the walker, 90 = on their right
    px_per_m: float  # native pixels per metre at the person
    supersample: int  # render scale / native scale
    width: int  # native crop size
    height: int
    anchor: tuple[float, float]  # native position of the body origin (between the feet) in the crop
    noise_sigma: float  # sensor noise, 8-bit levels
    optical_blur: float  # Gaussian radius, native px
    haze: float  # 0..1 blend toward the haze colour
    gain: tuple[float, float, float]  # illumination x white balance per channel
    follow: float  # fraction of the walking motion visible as background scroll

    @property
    def basis(self):
        return view_basis(self.elevation, self.azimuth)

    def light(self, color: Color) -> Color:
        """A scene colour as this camera records it: illumination and white balance, then haze."""
        return tuple(int(np.clip(round(c * g * (1 - self.haze) + h * self.haze), 0, 255))
                     for c, g, h in zip(color, self.gain, HAZE_COLOR))

    def light_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """`light` for a whole (H, W, 3) uint8 image."""
        lit = pixels * (np.asarray(self.gain, np.float32) * (1 - self.haze)) + np.float32(self.haze) * HAZE_COLOR
        return np.clip(np.rint(lit), 0, 255).astype(np.uint8)


def ground_geometry(rng: np.random.Generator, camera: int) -> tuple[float, float, float]:
    """(elevation, azimuth, px_per_m) for ground camera G`camera`: G1 sees the walker side-on, G2 from the
    front or back; a few degrees of tilt and heading wobble; 80-175 px for a 1.7 m person (crops ~100-250 px)."""
    base = 90.0 if camera == 1 else 0.0
    azimuth = base + 180.0 * rng.integers(0, 2) + rng.normal(0.0, 10.0)
    return float(rng.uniform(3.0, 12.0)), float(azimuth % 360), float(rng.uniform(80.0, 175.0) / PERSON_HEIGHT_M)


def aerial_geometry(rng: np.random.Generator, capture_point: int) -> tuple[float, float, float]:
    """(elevation, azimuth, px_per_m) for capture point `capture_point` (index into CAPTURE_POINTS): the
    pitch with a little wobble (never above 90°), any walking direction, size from the range law ±10 %."""
    angle, height, distance = CAPTURE_POINTS[capture_point]
    elevation = min(90.0, angle + rng.normal(0.0, 1.5))
    px = aerial_person_px(height, distance) * rng.uniform(0.9, 1.1)
    return float(elevation), float(rng.uniform(0.0, 360.0)), float(px / PERSON_HEIGHT_M)


def make_view(rng: np.random.Generator, platform: str, geometry: tuple[float, float, float],
              poses: list[Figure], range_m: float) -> View:
    """Size the crop around the figure's extent over several poses and draw the imaging conditions.
    `range_m` is the slant range for aerial views (drives noise, blur and haze), ignored for ground."""
    elevation, azimuth, px_per_m = geometry
    basis, toward = view_basis(elevation, azimuth)
    extents = np.array([extent(project(figure, basis, toward)) for figure in poses])
    x0, y0 = extents[:, :2].min(axis=0)
    x1, y1 = extents[:, 2:].max(axis=0)
    margin = rng.uniform(0.08, 0.18)
    width = max(_MIN_SIDE_PX, int(round((x1 - x0) * (1 + 2 * margin) * px_per_m)))
    height = max(_MIN_SIDE_PX, int(round((y1 - y0) * (1 + 2 * margin) * px_per_m)))
    anchor = (width / 2 - (x0 + x1) / 2 * px_per_m, height / 2 - (y0 + y1) / 2 * px_per_m)
    supersample = 4 if height < 40 else 2 if height < 100 else 1
    gain = rng.uniform(0.8, 1.15) * rng.uniform(0.94, 1.06, 3)
    if platform == "ground":
        noise, blur, haze, follow = rng.uniform(1.5, 3.5), rng.uniform(0.0, 0.3), 0.0, rng.uniform(0.2, 0.45)
    else:
        far = float(np.clip((range_m - 10.0) / 140.0, 0.0, 1.0))
        noise = 2.5 + 5.5 * far * rng.uniform(0.8, 1.2)
        blur = 0.25 + 0.6 * far * rng.uniform(0.7, 1.3)
        haze = 0.28 * far * rng.uniform(0.5, 1.2)
        follow = rng.uniform(0.15, 0.4)
    return View(elevation, azimuth, px_per_m, supersample, width, height, anchor, float(noise), float(blur),
                float(haze), tuple(float(g) for g in gain), float(follow))


def crop_motion(rng: np.random.Generator, view: View, frames: int, step_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: (jitter (frames, 2) of the person inside the crop, scroll (frames, 2) of the background),
    both in native pixels. The background moves against the walking direction by `step_m` metres per frame
    times the follow factor, and with the crop's jitter."""
    sigma = 0.015 * max(view.height, view.width)
    jitter = np.zeros((frames, 2))
    for t in range(1, frames):
        jitter[t] = 0.8 * jitter[t - 1] + rng.normal(0.0, sigma, 2)
    basis, _ = view.basis
    forward = basis[1] * step_m * view.px_per_m * view.follow  # image motion of one frame's walk
    scroll = np.arange(frames)[:, None] * forward[None, :] - jitter
    return jitter, scroll
