"""Backgrounds: a textured, cluttered canvas per tracklet that the crop window slides over.

Three capture locations (the `location` field of aerial names) each have a ground material and typical clutter:
1 park (grass, dirt patches, bushes, benches), 2 campus road (asphalt, lane markings, parked cars),
3 plaza (paving tiles, bins, planters). Ground cameras see a backdrop (facades with windows, trees, poles, far
pedestrians) above a strip of the location's ground; drones see the ground from above with clutter drawn at
metric sizes (a car is 4.5 m long at the tracklet's pixels-per-metre), so scale is a real cue. Textures are
low-frequency blotches (a small random grid upsampled by PIL) plus fine grain; all drawing is PIL or
vectorised numpy. The canvas is drawn once per tracklet; frames are windows into it.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from .identity import Color

LOCATIONS = (1, 2, 3)
_GROUND = {1: (84, 122, 58), 2: (78, 78, 82), 3: (168, 158, 142)}
_PATCH = {1: (142, 122, 92), 2: (96, 94, 92), 3: (150, 134, 118)}
_BACKDROP = {1: ((58, 92, 52), (88, 118, 70)), 2: ((196, 186, 164), (150, 150, 156)), 3: ((176, 178, 182), (122, 112, 104))}


def _shade(color, factor: float) -> Color:
    return tuple(int(np.clip(c * factor, 0, 255)) for c in color)


def _texture(rng: np.random.Generator, height: int, width: int, color, blotch_px: float, amount: float,
             grain: float) -> Image.Image:
    """A canvas of `color` modulated by blotches about `blotch_px` across (±`amount` relative) and grain."""
    cells = (max(2, int(height / blotch_px) + 2), max(2, int(width / blotch_px) + 2))
    blotches = Image.fromarray(rng.integers(0, 256, cells, dtype=np.uint8)).resize((width, height), Image.BILINEAR)
    modulation = 1.0 + amount * (np.asarray(blotches, np.float32) / 127.5 - 1.0)
    pixels = modulation[..., None] * np.asarray(color, np.float32)
    pixels += rng.normal(0.0, grain, (height, width, 1)).astype(np.float32)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _random_color(rng: np.random.Generator, low: int = 30, high: int = 230) -> Color:
    return tuple(int(c) for c in rng.integers(low, high, 3))


def _count(rng: np.random.Generator, area_m2: float, per_100m2: float) -> int:
    return int(rng.poisson(area_m2 * per_100m2 / 100.0))


def aerial_canvas(rng: np.random.Generator, height: int, width: int, px_per_m: float, location: int) -> Image.Image:
    """Ground seen from above, `px_per_m` render pixels per metre."""
    canvas = _texture(rng, height, width, _GROUND[location], blotch_px=max(4.0, 1.5 * px_per_m), amount=0.12, grain=6.0)
    draw = ImageDraw.Draw(canvas)
    area = height * width / px_per_m ** 2
    m = px_per_m

    def spot(size_m):
        x, y = rng.uniform(-size_m * m, width), rng.uniform(-size_m * m, height)
        return x, y

    for _ in range(_count(rng, area, 3.0)):  # patches of another material (dirt, repairs, stains)
        x, y = spot(3.0)
        w, h = rng.uniform(1.0, 4.0, 2) * m
        draw.ellipse((x, y, x + w, y + h), fill=_shade(_PATCH[location], rng.uniform(0.85, 1.1)))
    if location == 3:  # paving grid
        step = rng.uniform(0.8, 1.6) * m
        line = _shade(_GROUND[3], 0.8)
        for x in np.arange(rng.uniform(0, step), width, step):
            draw.line((x, 0, x, height), fill=line, width=max(1, int(0.05 * m)))
        for y in np.arange(rng.uniform(0, step), height, step):
            draw.line((0, y, width, y), fill=line, width=max(1, int(0.05 * m)))
    if location == 2:  # lane markings
        x = rng.uniform(0, width)
        for y in np.arange(rng.uniform(-3 * m, 0), height, 6 * m):
            draw.rectangle((x, y, x + 0.15 * m, y + 3 * m), fill=(222, 222, 210))
        for _ in range(_count(rng, area, 1.2)):  # parked cars with their shadows
            x, y = spot(4.5)
            w, h = (1.8 * m, 4.5 * m) if rng.uniform() < 0.5 else (4.5 * m, 1.8 * m)
            draw.rectangle((x + 0.4 * m, y + 0.4 * m, x + w + 0.4 * m, y + h + 0.4 * m), fill=_shade(_GROUND[2], 0.55))
            draw.rounded_rectangle((x, y, x + w, y + h), radius=0.4 * m, fill=_random_color(rng))
            draw.rectangle((x + 0.2 * w, y + 0.2 * h, x + 0.8 * w, y + 0.5 * h), fill=(40, 48, 60))
    for _ in range(_count(rng, area, 2.5 if location == 1 else 0.8)):  # bushes and tree crowns
        x, y = spot(3.0)
        r = rng.uniform(0.5, 2.2) * m
        draw.ellipse((x + 0.3 * r, y + 0.3 * r, x + 2.3 * r, y + 2.3 * r), fill=_shade(_GROUND[location], 0.5))
        draw.ellipse((x, y, x + 2 * r, y + 2 * r), fill=_shade((52, 96, 44), rng.uniform(0.7, 1.2)))
    for _ in range(_count(rng, area, 1.5)):  # small street furniture: benches, bins, planters, manholes
        x, y = spot(1.6)
        kind = rng.integers(0, 3)
        if kind == 0:
            draw.rectangle((x, y, x + 1.6 * m, y + 0.5 * m), fill=_shade((120, 84, 52), rng.uniform(0.8, 1.2)))
        elif kind == 1:
            draw.ellipse((x, y, x + 0.6 * m, y + 0.6 * m), fill=_random_color(rng, 20, 120))
        else:
            draw.ellipse((x, y, x + 0.8 * m, y + 0.8 * m), outline=(60, 60, 60), width=max(1, int(0.08 * m)))
    return canvas


def ground_canvas(rng: np.random.Generator, height: int, width: int, px_per_m: float, location: int,
                  horizon: float) -> Image.Image:
    """What a level camera sees behind the walker: backdrop above row `horizon`, the location's ground below.
    Backdrop clutter is drawn at half the person's scale (it stands further away)."""
    m = 0.5 * px_per_m
    wall, other = _BACKDROP[location]
    canvas = _texture(rng, height, width, wall, blotch_px=max(6.0, 2.0 * m), amount=0.15, grain=5.0)
    ground = _texture(rng, height - horizon, width, _GROUND[location], blotch_px=max(6.0, m), amount=0.12, grain=6.0)
    canvas.paste(ground, (0, horizon))
    draw = ImageDraw.Draw(canvas)
    x = rng.uniform(-4 * m, 0)
    while x < width:  # facade segments / tree rows / hedges, each with its own colour and window grid
        w = rng.uniform(3.0, 9.0) * m
        top = horizon - rng.uniform(1.5, 6.0) * m
        color = _shade(other if rng.uniform() < 0.5 else wall, rng.uniform(0.75, 1.15))
        if location == 1:
            draw.ellipse((x, top, x + w, horizon + 0.3 * m), fill=_shade(color, rng.uniform(0.7, 1.0)))
        else:
            draw.rectangle((x, top, x + w, horizon), fill=color)
            pane = rng.uniform(0.6, 1.2) * m
            glass = _shade((70, 90, 110), rng.uniform(0.7, 1.3))
            for wx in np.arange(x + 0.4 * m, x + w - pane, 1.8 * pane):
                for wy in np.arange(top + 0.4 * m, horizon - 1.2 * m, 2.0 * pane):
                    draw.rectangle((wx, wy, wx + pane, wy + 1.2 * pane), fill=glass)
        x += w + rng.uniform(0.0, 2.0) * m
    for _ in range(int(rng.poisson(width / (4 * m) + 1))):  # poles, bins, distant pedestrians
        x = rng.uniform(0, width)
        kind = rng.integers(0, 3)
        if kind == 0:
            draw.rectangle((x, horizon - 4.0 * m, x + 0.12 * m, horizon + 0.2 * m), fill=(70, 72, 76))
        elif kind == 1:
            draw.rectangle((x, horizon - 0.9 * m, x + 0.6 * m, horizon + 0.2 * m), fill=_random_color(rng, 20, 120))
        else:
            h = rng.uniform(1.5, 1.9) * m
            draw.rectangle((x, horizon - h * 0.8, x + 0.35 * m, horizon - h * 0.1), fill=_random_color(rng))
            draw.ellipse((x + 0.02 * m, horizon - h, x + 0.32 * m, horizon - h * 0.82), fill=(120, 92, 70))
    return canvas


def shadow_color(location: int) -> Color:
    """The colour of a cast shadow on this location's ground."""
    return _shade(_GROUND[location], 0.55)
