"""Per-frame degradations and the per-frame quality ground truth they imply.

Real tracklets have bad frames in bursts: a pole or passer-by slides across, the drone jerks (motion blur), the
stream drops to a low bit rate (heavy JPEG) or resolution, the detector's box slips off the person. A tracklet
gets Binomial(frames, fraction) degraded frames, covered by bursts of 1-6 frames of one kind each (bursts may
overlap, so a frame can carry two flags). Each frame's `quality` in [0, 1] is the product of one factor per
degradation (1.0 for a clean frame):
- motion_blur: 1 - 0.6 * min(1, blur length / (12 % of the crop height));
- occlusion:   1 - fraction of the person's box covered by the occluder (measured on a mask);
- misaligned:  the fraction of the person's box still inside the crop;
- lowres:      1 / sqrt(downsample factor);
- compression: 0.25 + JPEG quality / 40 (capped at 1).
This is the target a quality-aware temporal weighting should learn to approximate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

KINDS = ("motion_blur", "occlusion", "lowres", "compression", "misaligned")
_KIND_WEIGHTS = (0.3, 0.25, 0.18, 0.15, 0.12)
OCCLUDERS = ("pole", "passer_by", "foliage", "box")


@dataclass(frozen=True)
class Burst:
    """One degradation event over frames [start, stop); its parameters are fixed over the burst."""

    kind: str
    start: int
    stop: int
    blur_px: float = 0.0  # motion_blur: length as a fraction of the crop height
    blur_angle: float = 0.0
    occluder: str = ""  # occlusion: what passes in front
    occluder_color: tuple[int, int, int] = (0, 0, 0)
    occluder_size: float = 0.0  # relative to the crop
    path: tuple[float, float] = (0.0, 0.0)  # occluder x position (relative) at the burst's first/last frame
    factor: float = 1.0  # lowres: downsample factor
    jpeg_quality: int = 0  # compression
    shift: tuple[float, float] = (0.0, 0.0)  # misaligned: box offset relative to the crop size

    def progress(self, frame: int) -> float:
        """0 at the burst's first frame, 1 at its last."""
        return 0.0 if self.stop - self.start <= 1 else (frame - self.start) / (self.stop - self.start - 1)


def _burst(rng: np.random.Generator, kind: str, start: int, stop: int) -> Burst:
    if kind == "motion_blur":
        return Burst(kind, start, stop, blur_px=float(rng.uniform(0.04, 0.14)), blur_angle=float(rng.uniform(0, 180)))
    if kind == "occlusion":
        enter = float(rng.uniform(-0.1, 0.4))
        leave = enter + float(rng.uniform(0.2, 0.6))
        return Burst(kind, start, stop, occluder=str(rng.choice(OCCLUDERS)),
                     occluder_color=tuple(int(c) for c in rng.integers(20, 200, 3)),
                     occluder_size=float(rng.uniform(0.25, 0.6)),
                     path=(enter, leave) if rng.uniform() < 0.5 else (1 - enter, 1 - leave))
    if kind == "lowres":
        return Burst(kind, start, stop, factor=float(rng.uniform(2.5, 5.0)))
    if kind == "compression":
        return Burst(kind, start, stop, jpeg_quality=int(rng.integers(5, 19)))
    angle = rng.uniform(0, 2 * math.pi)
    size = rng.uniform(0.25, 0.45)
    return Burst(kind, start, stop, shift=(float(size * math.cos(angle)), float(size * math.sin(angle))))


def schedule(rng: np.random.Generator, frames: int, fraction: float) -> list[list[Burst]]:
    """For each frame, the bursts covering it (empty = clean). Exactly Binomial(frames, fraction) frames are
    covered: bursts are placed at random until the target is reached, the last one trimmed to fit."""
    target = int(rng.binomial(frames, fraction)) if fraction > 0 else 0
    per_frame: list[list[Burst]] = [[] for _ in range(frames)]
    covered = 0
    while covered < target:
        kind = str(rng.choice(KINDS, p=_KIND_WEIGHTS))
        start = int(rng.integers(0, frames))
        stop = min(frames, start + int(rng.integers(1, 7)))
        # trim so that the number of newly covered frames does not pass the target
        new, end = 0, start
        while end < stop and covered + new + (not per_frame[end]) <= target:
            new += not per_frame[end]
            end += 1
        burst = _burst(rng, kind, start, end)
        for frame in range(start, end):
            per_frame[frame].append(burst)
        covered += new
    return per_frame


def draw_occluder(image: Image.Image, burst: Burst, frame: int, person_box: tuple[float, float, float, float]) -> float:
    """Draw the burst's occluder onto `image` (render resolution) and return the covered fraction of
    `person_box` (x0, y0, x1, y1 in the same pixels), measured on a mask of the occluder."""
    width, height = image.size
    mask = Image.new("L", image.size, 0)
    x = (burst.path[0] + burst.progress(frame) * (burst.path[1] - burst.path[0])) * width
    size = burst.occluder_size
    shapes: list[tuple[str, tuple]] = []
    if burst.occluder == "pole":
        half = 0.5 * size * 0.5 * width
        shapes.append(("rect", (x - half, -1, x + half, height + 1)))
    elif burst.occluder == "passer_by":
        half = 0.5 * size * width
        shapes.append(("ellipse", (x - half, 0.25 * height, x + half, 1.1 * height)))
        shapes.append(("ellipse", (x - 0.45 * half, 0.05 * height, x + 0.45 * half, 0.3 * height)))
    elif burst.occluder == "foliage":
        for index in range(5):
            cx = x + (index - 2) * 0.12 * width
            cy = height * (0.15 + 0.17 * index)
            r = 0.35 * size * width
            shapes.append(("ellipse", (cx - r, cy - r, cx + r, cy + r)))
    else:  # a low box in front: a bench, car bonnet or railing
        shapes.append(("rect", (-1, height * (1 - size), width + 1, height + 1)))
    color = (40, 100, 40) if burst.occluder == "foliage" else burst.occluder_color
    for target, fill in ((ImageDraw.Draw(image), color), (ImageDraw.Draw(mask), 255)):
        for shape, box in shapes:
            (target.rectangle if shape == "rect" else target.ellipse)(box, fill=fill)
    x0, y0, x1, y1 = (int(round(v)) for v in person_box)
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(width, x1), min(height, y1)
    if x1 <= x0 or y1 <= y0:
        return 0.0
    return float(np.asarray(mask)[y0:y1, x0:x1].mean() / 255.0)


def motion_blur(pixels: np.ndarray, length_px: float, angle_deg: float) -> np.ndarray:
    """Average of the image shifted along a line of `length_px` pixels at `angle_deg` (edges repeated)."""
    steps = max(2, int(round(length_px)) + 1)
    reach = int(math.ceil(length_px / 2)) + 1
    padded = np.pad(pixels, ((reach, reach), (reach, reach), (0, 0)), mode="edge")
    height, width = pixels.shape[:2]
    out = np.zeros_like(pixels)
    for t in np.linspace(-length_px / 2, length_px / 2, steps):
        dx = int(round(t * math.cos(math.radians(angle_deg))))
        dy = int(round(t * math.sin(math.radians(angle_deg))))
        out += padded[reach + dy : reach + dy + height, reach + dx : reach + dx + width]
    return out / steps


def soft_blur(pixels: np.ndarray, radius: float) -> np.ndarray:
    """Gaussian-like blur of standard deviation `radius` px: repeated separable [a, 1-2a, a] passes (variance 2a
    each, a <= 0.3). Optical and atmospheric blur of small crops is below ~1 px, where this is as good as
    PIL's GaussianBlur and several times cheaper on tiny images."""
    passes = max(1, math.ceil(radius * radius / 0.6))
    a = radius * radius / (2 * passes)
    for _ in range(passes):
        padded = np.concatenate([pixels[:1], pixels, pixels[-1:]], axis=0)
        pixels = (1 - 2 * a) * pixels + a * (padded[:-2] + padded[2:])
        padded = np.concatenate([pixels[:, :1], pixels, pixels[:, -1:]], axis=1)
        pixels = (1 - 2 * a) * pixels + a * (padded[:, :-2] + padded[:, 2:])
    return pixels


def lowres(image: Image.Image, factor: float) -> Image.Image:
    """Down- then up-sample: the detail of a `factor`-times smaller crop at the same size."""
    width, height = image.size
    small = image.resize((max(1, round(width / factor)), max(1, round(height / factor))), Image.BILINEAR)
    return small.resize((width, height), Image.NEAREST if factor >= 4 else Image.BILINEAR)


def quality_factor(burst: Burst, measured: float) -> float:
    """This burst's factor of a frame's quality (module docstring); `measured` is the occluded fraction for
    occlusion, the fraction of the person's box inside the crop for misaligned, unused otherwise."""
    if burst.kind == "motion_blur":
        return 1.0 - 0.6 * min(1.0, burst.blur_px / 0.12)
    if burst.kind == "occlusion":
        return 1.0 - measured
    if burst.kind == "misaligned":
        return measured
    if burst.kind == "lowres":
        return 1.0 / math.sqrt(burst.factor)
    return min(1.0, 0.25 + burst.jpeg_quality / 40)
