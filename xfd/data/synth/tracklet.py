"""Render one tracklet to JPEG files and report its ground truth.

Per tracklet: the camera (`camera.make_view`), the crop's motion, the degradation bursts, and a background canvas;
the camera's illumination and haze are applied once, to the canvas and to the person's colours. Per frame: window
the canvas (scrolling with the walk, jittering with the detector box), draw the cast shadow and the figure at the
current gait phase, draw any occluder, reduce from the render scale to the native crop size, apply low
resolution, optical and motion blur and sensor noise (a random window into a few pre-drawn noise fields), then
encode with fixed JPEG settings. The tracklet's generators are seeded from (seed, pid, tracklet id) only, so
the bytes do not depend on which worker renders it or in which order; degradations have a stream of their own, so
a frame without degradations is byte-identical whatever the degraded fraction.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import asdict, dataclass, replace

import numpy as np
from PIL import Image, ImageDraw

from ..metadata import CAPTURE_POINTS, detreidx_camid, parse_detreidx_frame
from . import degrade
from .camera import aerial_geometry, crop_motion, ground_geometry, make_view, slant_range
from .figure import build_figure, walking_speed
from .identity import recolor
from .naming import TrackletSpec
from .render import draw_figure, extent, project, shadow_basis
from .scene import aerial_canvas, ground_canvas, shadow_color

_TRACKLET = 4  # SeedSequence purpose
_NOISE_FIELDS, _NOISE_SLACK = 4, 8  # per-frame noise = a random window into one of a few noise fields


@dataclass(frozen=True)
class RenderSettings:
    seed: int
    jpeg_quality: int
    degraded_fraction: float
    fps: float


def _encode(pixels: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality, subsampling="4:2:0", optimize=False)
    return buffer.getvalue()


def _inside_fraction(box, width: float, height: float) -> float:
    """Fraction of the area of `box` (x0, y0, x1, y1) inside [0, width] x [0, height]."""
    x0, y0, x1, y1 = box
    inner = max(0.0, min(x1, width) - max(x0, 0.0)) * max(0.0, min(y1, height) - max(y0, 0.0))
    return inner / max(1e-9, (x1 - x0) * (y1 - y0))


@dataclass(frozen=True)
class _Canvas:
    """The lit background of a tracklet at render scale, and where frame 0's crop window starts in it."""

    image: Image.Image
    offset: np.ndarray  # (x, y)
    margin: tuple[int, int]  # room around the scroll path for a slipped box


def _canvas(rng: np.random.Generator, spec: TrackletSpec, view, scroll: np.ndarray) -> _Canvas:
    """Cover the crop window's whole path (scroll) plus half a crop of margin on every side."""
    s = view.supersample
    width, height = view.width * s, view.height * s
    margin = (width // 2 + 2, height // 2 + 2)
    low, high = np.floor(scroll.min(axis=0) * s), np.ceil(scroll.max(axis=0) * s)
    size_w = int(high[0] - low[0]) + width + 2 * margin[0]
    size_h = int(high[1] - low[1]) + height + 2 * margin[1]
    offset = np.array((margin[0] - low[0], margin[1] - low[1]))
    if spec.platform == "ground":
        horizon = int(offset[1] + view.anchor[1] * s - rng.uniform(0.25, 0.6) * height)
        image = ground_canvas(rng, size_h, size_w, view.px_per_m * s, spec.location, horizon)
    else:
        image = aerial_canvas(rng, size_h, size_w, view.px_per_m * s, spec.location)
    return _Canvas(Image.fromarray(view.light_pixels(np.asarray(image))), offset, margin)


def _finish(image: Image.Image, view, bursts: list, noise: np.ndarray) -> np.ndarray:
    """Render-scale frame -> native uint8 pixels: reduce, low resolution, optical and motion blur, noise."""
    if view.supersample > 1:
        image = image.reduce(view.supersample)
    for burst in bursts:
        if burst.kind == "lowres":
            image = degrade.lowres(image, burst.factor)
    pixels = np.array(image, np.float32)
    if view.optical_blur >= 0.15:
        pixels = degrade.soft_blur(pixels, view.optical_blur)
    for burst in bursts:
        if burst.kind == "motion_blur":
            pixels = degrade.motion_blur(pixels, burst.blur_px * view.height, burst.blur_angle)
    pixels += noise
    return np.clip(pixels, 0, 255, out=pixels).astype(np.uint8)


def render_tracklet(spec: TrackletSpec, settings: RenderSettings, root: str) -> dict:
    """Write the tracklet's frames under `root/spec.folder`; return its ground-truth record."""
    # Degradations draw from their own stream: the same tracklet with and without them differs only there.
    streams = np.random.SeedSequence([settings.seed, _TRACKLET, spec.pid, spec.tracklet_id]).spawn(2)
    rng = np.random.default_rng(streams[0])
    identity, outfit = spec.identity, spec.outfit
    phase0 = rng.uniform(0.0, 2 * math.pi)
    phase_step = 2 * math.pi * identity.gait.cadence / settings.fps
    sizing_poses = [build_figure(identity, outfit, phase0 + k * math.pi / 2) for k in range(4)]
    if spec.platform == "ground":
        geometry, range_m = ground_geometry(rng, spec.ground_camera), 0.0
    else:
        _, height_m, distance_m = CAPTURE_POINTS[spec.capture_point]
        geometry, range_m = aerial_geometry(rng, spec.capture_point), slant_range(height_m, distance_m)
    view = make_view(rng, spec.platform, geometry, sizing_poses, range_m)
    jitter, scroll = crop_motion(rng, view, spec.frames, walking_speed(identity) / settings.fps)
    bursts = degrade.schedule(np.random.default_rng(streams[1]), spec.frames, settings.degraded_fraction)
    canvas = _canvas(rng, spec, view, scroll)
    shadow = None
    if spec.sun is not None:
        shadow = (shadow_basis(view.basis[0], rng.uniform(0.0, 360.0), spec.sun[1]),
                  view.light(shadow_color(spec.location)))
    lit = replace(identity, look=recolor(identity.look, view.light))
    lit_outfit = recolor(outfit, view.light)
    # sensor noise: luminance only (chroma noise would not survive 4:2:0 JPEG anyway)
    noise = rng.standard_normal((_NOISE_FIELDS, view.height + _NOISE_SLACK, view.width + _NOISE_SLACK, 1),
                                dtype=np.float32) * np.float32(view.noise_sigma)

    s = view.supersample
    width, height, scale = view.width * s, view.height * s, view.px_per_m * s
    basis, toward = view.basis
    folder = os.path.join(root, spec.folder)
    os.makedirs(folder, exist_ok=True)
    flags, qualities, jpeg_qualities, total_bytes = [], [], [], 0
    for index in range(spec.frames):
        frame_bursts = bursts[index]
        shift = sum((np.array(b.shift) * (width, height) for b in frame_bursts if b.kind == "misaligned"),
                    np.zeros(2))
        shift = np.clip(shift, np.subtract(2, canvas.margin), np.subtract(canvas.margin, 2))  # overlapping slips
        x0, y0 = np.rint(canvas.offset + scroll[index] * s - shift).astype(int).tolist()
        image = canvas.image.crop((x0, y0, x0 + width, y0 + height))
        draw = ImageDraw.Draw(image)
        figure = build_figure(lit, lit_outfit, phase0 + index * phase_step)
        projection = project(figure, basis, toward)
        origin = tuple((np.asarray(view.anchor) + jitter[index]) * s + shift)
        if shadow is not None:
            draw_figure(draw, figure, project(figure, shadow[0], toward), origin, scale, flat=shadow[1])
        draw_figure(draw, figure, projection, origin, scale)

        factor = 1.0
        if frame_bursts:
            ex0, ey0, ex1, ey1 = extent(projection)
            box = (origin[0] + ex0 * scale, origin[1] + ey0 * scale, origin[0] + ex1 * scale, origin[1] + ey1 * scale)
            for burst in frame_bursts:
                measured = 0.0
                if burst.kind == "occlusion":
                    measured = degrade.draw_occluder(image, burst, index, box)
                elif burst.kind == "misaligned":
                    measured = _inside_fraction(box, width, height)
                factor *= degrade.quality_factor(burst, measured)
        field, dy, dx = rng.integers(0, (_NOISE_FIELDS, _NOISE_SLACK + 1, _NOISE_SLACK + 1)).tolist()
        pixels = _finish(image, view, frame_bursts, noise[field, dy : dy + view.height, dx : dx + view.width])
        quality = min([settings.jpeg_quality] + [b.jpeg_quality for b in frame_bursts if b.kind == "compression"])
        data = _encode(pixels, quality)
        with open(os.path.join(folder, spec.frame_name(index)), "wb") as handle:
            handle.write(data)
        total_bytes += len(data)
        flags.append(sorted({burst.kind for burst in frame_bursts}))
        qualities.append(round(factor, 4))
        jpeg_qualities.append(quality)

    first = parse_detreidx_frame(spec.frame_name(0))
    return {
        "split": spec.split,
        "role": spec.role,
        "pid": spec.pid,
        "tracklet": spec.folder.rsplit("/", 1)[1],
        "folder": spec.folder,
        "session": spec.session,
        "platform": spec.platform,
        "ground_camera": spec.ground_camera,
        "capture_point": None if spec.capture_point is None else {
            "index": spec.capture_point,
            **dict(zip(("angle", "height", "distance"), CAPTURE_POINTS[spec.capture_point])),
        },
        "camid": detreidx_camid(first, "capture-point"),
        "date": spec.day.isoformat(),
        "location": spec.location,
        "frames": spec.frames,
        "first_frame": spec.frame_name(0),
        "bytes": total_bytes,
        "view": {
            "elevation": round(view.elevation, 3), "azimuth": round(view.azimuth, 3),
            "person_px": round(view.px_per_m * identity.body.height, 2),
            "width": view.width, "height": view.height, "supersample": s,
            "noise_sigma": round(view.noise_sigma, 3), "optical_blur": round(view.optical_blur, 3),
            "haze": round(view.haze, 4), "sunny": spec.sun is not None,
        },
        "body": asdict(identity.body),
        "gait": asdict(identity.gait),
        "outfit": asdict(outfit),
        "frame_flags": flags,
        "frame_quality": qualities,
        "frame_jpeg_quality": jpeg_qualities,
    }
