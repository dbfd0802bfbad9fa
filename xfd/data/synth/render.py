"""Orthographic projection of a `Figure` and painter's-algorithm drawing with PIL.

A view is an elevation (0° = level, 90° = straight down) and an azimuth around the person (0° = camera in
front, 90° = on their right). Orthographic projection is enough: a person spans a small angle of any camera here,
and it keeps every solid's projection exact and cheap — a capsule stays a stadium, a ball a disc, an elliptical
frustum the hull of two ellipses. At 90° the same formulas give the top-down view (head and shoulders, feet
peeking out as they swing), so aerial foreshortening needs no special case.

A capsule is drawn as one stadium polygon. A frustum is drawn as its two projected sections plus the quadrilateral between their extreme points across the
centre line: exact for equal sections and for the level and top-down views, within slivers otherwise — and free
of a per-frame convex hull in Python. Drawing uses PIL ImageDraw (C loops) at the render resolution, far to near.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import ImageDraw

from .figure import Figure
from .identity import Color

_SECTION_POINTS = 12
_ANGLES = np.linspace(0.0, 2 * math.pi, _SECTION_POINTS, endpoint=False)
_COS, _SIN = np.cos(_ANGLES)[:, None], np.sin(_ANGLES)[:, None]
_ARC_POINTS = 5
_ARC = np.linspace(0.0, math.pi, _ARC_POINTS)
_ARC_COS, _ARC_SIN = np.cos(_ARC)[None, :, None], np.sin(_ARC)[None, :, None]


def view_basis(elevation_deg: float, azimuth_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """(basis, toward): basis (3, 2) maps body-frame metres to image-plane metres (x right, y down);
    toward is the unit vector from the person to the camera (larger `p @ toward` = nearer the camera)."""
    theta, phi = math.radians(elevation_deg), math.radians(azimuth_deg)
    toward = np.array((math.cos(theta) * math.sin(phi), math.cos(theta) * math.cos(phi), math.sin(theta)))
    right = np.array((-math.cos(phi), math.sin(phi), 0.0))
    up = np.array((-math.sin(theta) * math.sin(phi), -math.sin(theta) * math.cos(phi), math.cos(theta)))
    return np.stack([right, -up], axis=1), toward


def shadow_basis(basis: np.ndarray, sun_azimuth_deg: float, sun_elevation_deg: float) -> np.ndarray:
    """A basis that projects a body-frame point first onto the ground along the sun's rays, then into the image."""
    reach = 1.0 / math.tan(math.radians(sun_elevation_deg))  # shadow length per metre of height
    azimuth = math.radians(sun_azimuth_deg)
    flatten = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0],
                        [-reach * math.sin(azimuth), -reach * math.cos(azimuth), 0.0]])
    return flatten @ basis


@dataclass(frozen=True)
class Projection:
    """A figure in image-plane metres (x right, y down, body-frame origin at 0)."""

    capsules: np.ndarray  # (K, 2, 2)
    capsule_radius: np.ndarray
    balls: np.ndarray  # (B, 2)
    ball_radius: np.ndarray
    sections: np.ndarray  # (F, 2, n, 2) outline points of each frustum's two sections
    patches: np.ndarray  # (P, 4, 2)
    patch_visible: np.ndarray  # (P,) bool
    depth: np.ndarray  # over all solids (capsules, balls, frusta, patches), larger = nearer


def project(figure: Figure, basis: np.ndarray, toward: np.ndarray) -> Projection:
    frusta2d = figure.frusta @ basis  # (F, 2, 2)
    axes = figure.frustum_axes
    sections = (frusta2d[:, :, None, :] + _COS * (axes[:, :, None, 0:1] * basis[0])
                + _SIN * (axes[:, :, None, 1:2] * basis[1]))
    depth = np.concatenate([
        figure.capsules.mean(axis=1) @ toward, figure.balls @ toward,
        figure.frusta.mean(axis=1) @ toward, figure.patches.mean(axis=1) @ toward,
    ]) + figure.bias
    return Projection(figure.capsules @ basis, figure.capsule_radius, figure.balls @ basis, figure.ball_radius,
                      sections, figure.patches @ basis, figure.patch_normal @ toward > 0.2, depth)


def extent(projection: Projection) -> tuple[float, float, float, float]:
    """(x_min, y_min, x_max, y_max) of the projected figure in image-plane metres."""
    radius = projection.capsule_radius[:, None, None]
    lows = [(projection.capsules - radius).reshape(-1, 2), projection.balls - projection.ball_radius[:, None],
            projection.sections.reshape(-1, 2)]
    highs = [(projection.capsules + radius).reshape(-1, 2), projection.balls + projection.ball_radius[:, None],
             projection.sections.reshape(-1, 2)]
    low, high = np.concatenate(lows).min(axis=0), np.concatenate(highs).max(axis=0)
    return float(low[0]), float(low[1]), float(high[0]), float(high[1])


def _frustum_polygons(sections: np.ndarray) -> list[np.ndarray]:
    """Two section outlines and the quadrilateral joining their extremes across the centre line, per frustum."""
    centers = sections.mean(axis=2)  # (F, 2, 2)
    axis = centers[:, 1] - centers[:, 0]
    normal = np.stack([-axis[:, 1], axis[:, 0]], axis=1)
    normal[np.hypot(normal[:, 0], normal[:, 1]) < 1e-9] = (1.0, 0.0)  # coincident centres: any direction
    along = np.einsum("fspk,fk->fsp", sections, normal)  # (F, 2, n)
    rows = np.arange(len(sections))[:, None]
    high, low = along.argmax(axis=2), along.argmin(axis=2)  # (F, 2)
    quads = np.stack([sections[rows, [0, 1], high], sections[rows, [1, 0], low[:, ::-1]]], axis=1)  # (F,2,2,2)
    return [sections[:, 0], sections[:, 1], quads.reshape(-1, 4, 2)]


def _stadiums(capsules: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """(K, 2 * 2 * _ARC_POINTS) flat polygon coordinates of each projected capsule: two half-circle arcs of
    `radius` around its end points (a capsule seen end-on, with coincident ends, becomes a disc)."""
    a, b = capsules[:, 0], capsules[:, 1]
    direction = b - a
    length = np.hypot(direction[:, 0], direction[:, 1])[:, None]
    direction = np.where(length > 1e-9, direction / np.maximum(length, 1e-9), (1.0, 0.0))
    normal = np.stack([-direction[:, 1], direction[:, 0]], axis=1)
    r = radius[:, None, None]
    # arc around b from +normal through +direction to -normal, then around a from -normal through -direction
    arc_b = b[:, None] + r * (_ARC_SIN * direction[:, None] + _ARC_COS * normal[:, None])
    arc_a = a[:, None] - r * (_ARC_SIN * direction[:, None] + _ARC_COS * normal[:, None])
    return np.concatenate([arc_b, arc_a], axis=1).reshape(len(capsules), -1)


def draw_figure(draw: ImageDraw.ImageDraw, figure: Figure, projection: Projection, origin: tuple[float, float],
                scale: float, shade: float = 0.85, flat: Color | None = None) -> None:
    """Draw the projected figure far to near; `origin` is where the body-frame origin (between the feet) lands,
    `scale` pixels per metre. Solids behind the body's mid-plane are darkened by `shade` as a cheap depth cue.
    With `flat`, everything is drawn in that one colour (a cast shadow: project with `shadow_basis`).
    Every solid is one or a few PIL polygon/ellipse calls with precomputed flat coordinate lists."""
    offset = np.asarray(origin)
    capsules = _stadiums(projection.capsules * scale + offset,
                         np.maximum(projection.capsule_radius * scale, 0.5)).tolist()
    balls = np.concatenate([projection.balls * scale + offset,
                            np.maximum(projection.ball_radius * scale, 0.5)[:, None]], axis=1).tolist()
    frusta = list(zip(*((p * scale + offset).reshape(len(p), -1).tolist()
                        for p in _frustum_polygons(projection.sections))))  # a figure always has a torso
    patches = (projection.patches * scale + offset).reshape(len(projection.patches), 8).tolist()
    bounds = np.cumsum([len(capsules), len(balls), len(frusta)]).tolist()

    for index in np.argsort(projection.depth, kind="stable").tolist():
        if flat is not None:
            color = flat
        elif projection.depth[index] >= 0:
            color = figure.colors[index]
        else:
            color = tuple(int(c * shade) for c in figure.colors[index])
        if index < bounds[0]:
            draw.polygon(capsules[index], fill=color)
        elif index < bounds[1]:
            x, y, r = balls[index - bounds[0]]
            draw.ellipse((x - r, y - r, x + r, y + r), fill=color)
        elif index < bounds[2]:
            for polygon in frusta[index - bounds[1]]:
                draw.polygon(polygon, fill=color)
        elif flat is None and projection.patch_visible[index - bounds[2]]:
            draw.polygon(patches[index - bounds[2]], fill=color)
