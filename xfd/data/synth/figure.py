"""A walking person as a handful of 3D solids: gait kinematics plus dressing.

Body frame: metres, x to the person's right, y forward (walking direction), z up, feet on z = 0. At gait phase
`phase` (radians; one cycle = two steps) the legs swing in the sagittal plane with knee flexion during swing,
the arms swing against the legs, the pelvis bounces and sways, the torso leans. The solids are
- capsules (limbs, neck, straps, long hair): a segment with a radius; projects to a stadium under any view;
- balls (head, hair, hands);
- frusta (torso bands, skirt, bags): two parallel horizontal elliptical sections joined; project to the hull
  of two ellipses, which gives the right width from the front, the side and from above;
- patches (a chest logo): a flat quad seen only from the side its normal faces.
Each solid has a colour and a small depth bias the painter uses to order near-ties (hair over head, head over
neck). A `Figure` keeps each kind in one array so that a view projects a whole pose with one matrix product per
kind (this runs once per frame). Nothing here knows about cameras or pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .identity import Color, Identity, Outfit

Point = tuple[float, float, float]


@dataclass(frozen=True)
class Figure:
    """One pose's solids by kind; `colors` and `bias` run over capsules, balls, frusta, patches in that order."""

    capsules: np.ndarray  # (K, 2, 3) end points
    capsule_radius: np.ndarray  # (K,)
    balls: np.ndarray  # (B, 3) centres
    ball_radius: np.ndarray  # (B,)
    frusta: np.ndarray  # (F, 2, 3) centres of the lower and upper section
    frustum_axes: np.ndarray  # (F, 2, 2) per section: half-width (x), half-depth (y)
    patches: np.ndarray  # (P, 4, 3) corners
    patch_normal: np.ndarray  # (P, 3)
    colors: tuple[Color, ...]
    bias: np.ndarray


class _Builder:
    """Collects solids as plain tuples (cheap) and packs them into a Figure once."""

    def __init__(self):
        self.capsules, self.balls, self.frusta, self.patches = [], [], [], []

    def capsule(self, a: Point, b: Point, radius: float, color: Color, bias: float = 0.0):
        self.capsules.append(((a, b), radius, color, bias))

    def ball(self, center: Point, radius: float, color: Color, bias: float = 0.0):
        self.balls.append((center, radius, color, bias))

    def frustum(self, bottom: Point, top: Point, bottom_axes, top_axes, color: Color, bias: float = 0.0):
        self.frusta.append(((bottom, top), (bottom_axes, top_axes), color, bias))

    def patch(self, corners: list[Point], normal: Point, color: Color, bias: float = 0.0):
        self.patches.append((corners, normal, color, bias))

    def build(self) -> Figure:
        def column(items, index, shape):
            return np.array([item[index] for item in items], float).reshape(shape)

        kinds = (self.capsules, self.balls, self.frusta, self.patches)
        return Figure(
            capsules=column(self.capsules, 0, (-1, 2, 3)), capsule_radius=column(self.capsules, 1, (-1,)),
            balls=column(self.balls, 0, (-1, 3)), ball_radius=column(self.balls, 1, (-1,)),
            frusta=column(self.frusta, 0, (-1, 2, 3)), frustum_axes=column(self.frusta, 1, (-1, 2, 2)),
            patches=column(self.patches, 0, (-1, 4, 3)), patch_normal=column(self.patches, 1, (-1, 3)),
            colors=tuple(item[2] for items in kinds for item in items),
            bias=np.array([item[3] for items in kinds for item in items], float),
        )


def _add(p: Point, *qs: Point) -> Point:
    x, y, z = p
    for qx, qy, qz in qs:
        x, y, z = x + qx, y + qy, z + qz
    return (x, y, z)


def _lerp(p, q, t: float):
    return tuple(a + t * (b - a) for a, b in zip(p, q))


def _swing(angle: float, length: float, outward: float = 0.0) -> Point:
    """A limb segment of `length` swung `angle` rad forward from hanging straight down, tilted `outward` (x)."""
    norm = math.sqrt(outward * outward + 1.0)
    return (outward * length / norm, math.sin(angle) * length / norm, -math.cos(angle) * length / norm)


def walking_speed(identity: Identity) -> float:
    """Metres per second: two steps per gait cycle, each step about 2 * leg length * sin(peak thigh swing)."""
    leg = identity.body.leg_ratio * identity.body.height
    return 4.0 * leg * math.sin(math.radians(identity.gait.stride)) * identity.gait.cadence


def build_figure(identity: Identity, outfit: Outfit, phase: float) -> Figure:
    """The dressed figure at one gait phase, in the body frame."""
    body, gait, look = identity.body, identity.gait, identity.look
    height, build = body.height, body.build
    head_r = body.head_ratio * height / 2
    hip_z = body.leg_ratio * height
    ankle_h = 0.045 * height
    thigh_len = shin_len = (hip_z - ankle_h) / 2
    foot_len = 0.13 * height
    neck_len = 0.03 * height
    torso_len = height - 2 * head_r - neck_len - hip_z
    shoulder_half = 0.1 * height * build
    hip_half = 0.055 * height * build * body.hip_ratio
    thigh_r, shin_r = 0.034 * height * build, 0.026 * height * build
    upper_r, fore_r = 0.021 * height * build, 0.017 * height * build
    chest_depth, hip_depth = 0.062 * height * build, 0.058 * height * build

    s, c = math.sin(phase), math.cos(phase)
    stride, knee, swing = (math.radians(a) for a in (gait.stride, gait.knee, gait.arm_swing))
    lean = math.radians(gait.lean)

    # Legs relative to the hip joints; then lift the body so the lower ankle stands on the ground.
    legs = []
    for sign in (1.0, -1.0):  # right, left
        thigh_angle = sign * stride * s
        flex = math.radians(5) + knee * max(0.0, sign * c) ** 2  # the knee bends while the leg swings forward
        shin_angle = thigh_angle - flex
        foot = (0.0, math.cos(shin_angle) * foot_len, math.sin(shin_angle) * foot_len)
        legs.append((sign, _swing(thigh_angle, thigh_len), _swing(shin_angle, shin_len), foot))
    lowest = min(thigh[2] + shin[2] for _, thigh, shin, _ in legs)
    pelvis_z = ankle_h - lowest + gait.bounce * (0.5 + 0.5 * math.cos(2 * phase))
    pelvis = (gait.sway * s, 0.0, pelvis_z)
    shoulders = _add(pelvis, (0.5 * gait.sway * s, torso_len * math.sin(lean), torso_len * math.cos(lean)))

    top, bottom, skin, shoes = outfit.top, outfit.bottom, look.skin, outfit.shoes
    out = _Builder()
    thigh_color, shin_color = {"trousers": (bottom, bottom), "shorts": (bottom, skin), "skirt": (skin, skin)}[
        outfit.bottom_kind]
    for sign, thigh, shin, foot in legs:
        hip = _add(pelvis, (sign * hip_half, 0.0, 0.0))
        knee_at = _add(hip, thigh)
        ankle = _add(knee_at, shin)
        out.capsule(hip, knee_at, thigh_r, thigh_color)
        out.capsule(knee_at, ankle, shin_r, shin_color)
        out.capsule(ankle, _add(ankle, foot), 0.7 * shin_r, shoes)
    if outfit.bottom_kind == "skirt":
        out.frustum(_add(pelvis, (0.0, 0.0, 0.02 * height)), (pelvis[0], 0.0, pelvis_z - 0.85 * thigh_len),
                    (hip_half + thigh_r, hip_depth), (1.45 * (hip_half + thigh_r), 1.3 * hip_depth), bottom, 0.06)

    torso_bottom = _add(pelvis, (0.0, 0.0, -0.03 * height))
    torso_top = _add(shoulders, (0.0, 0.0, 0.012 * height))
    bottom_axes, top_axes = (hip_half + 0.9 * thigh_r, hip_depth), (shoulder_half + 0.4 * upper_r, chest_depth)
    bands = {"plain": (top,), "chest_logo": (top,), "two_tone": (top, outfit.top_secondary),
             "stripes": (top, outfit.top_secondary) * 3}[outfit.top_pattern]
    for index, color in enumerate(bands):  # stripes and colour blocks are stacked bands of the torso
        t0, t1 = index / len(bands), (index + 1) / len(bands)
        out.frustum(_lerp(torso_bottom, torso_top, t0), _lerp(torso_bottom, torso_top, t1),
                    _lerp(bottom_axes, top_axes, t0), _lerp(bottom_axes, top_axes, t1), color, 0.05)
    if outfit.top_pattern == "chest_logo":
        cx, cy, cz = _lerp(torso_bottom, torso_top, 0.68)
        half_w, half_h, front = 0.35 * top_axes[0], 0.12 * torso_len, cy + 1.02 * chest_depth
        out.patch([(cx - half_w, front, cz - half_h), (cx + half_w, front, cz - half_h),
                   (cx + half_w, front, cz + half_h), (cx - half_w, front, cz + half_h)],
                  (0.0, 1.0, 0.0), outfit.top_secondary, 0.3)

    sleeve = top if outfit.long_sleeves else skin
    arm_len = body.arm_ratio * height
    for sign in (1.0, -1.0):
        upper_angle = -sign * swing * s  # the right arm swings with the left leg
        shoulder = _add(shoulders, (sign * shoulder_half, 0.0, 0.0))
        elbow = _add(shoulder, _swing(upper_angle, 0.55 * arm_len, sign * 0.12))
        fore_angle = upper_angle + math.radians(12) + 0.5 * max(0.0, upper_angle)
        wrist = _add(elbow, _swing(fore_angle, 0.45 * arm_len, sign * 0.06))
        out.capsule(shoulder, elbow, upper_r, top)
        out.capsule(elbow, wrist, fore_r, sleeve)
        out.ball(_add(wrist, _swing(fore_angle, 0.03 * height)), 1.2 * fore_r, skin)

    neck_base = _add(shoulders, (0.0, 0.0, 0.005 * height))
    head = _add(shoulders, (0.0, 0.02 * height, neck_len + head_r))
    out.capsule(neck_base, _add(head, (0.0, 0.0, -0.4 * head_r)), 0.38 * head_r, skin, -0.01)
    out.ball(head, head_r, skin, 0.01)
    out.ball(_add(head, (0.0, -0.35 * head_r, 0.2 * head_r)), 0.92 * head_r, look.hair)  # back of the head
    if outfit.hat is not None:
        out.ball(_add(head, (0.0, 0.0, 0.45 * head_r)), 0.82 * head_r, outfit.hat, 0.3)
    else:
        out.ball(_add(head, (0.0, -0.1 * head_r, 0.5 * head_r)), 0.68 * head_r, look.hair, 0.3)
    if look.hair_long:
        out.capsule(_add(head, (0.0, -0.45 * head_r, 0.0)), _add(neck_base, (0.0, -0.8 * chest_depth, -0.06 * height)),
                    0.7 * head_r, look.hair, -0.02)

    if outfit.bag == "backpack":
        back = -(chest_depth + 0.045 * height)
        out.frustum(_add(pelvis, (0.0, back, 0.3 * torso_len)), _add(shoulders, (0.0, back, -0.08 * torso_len)),
                    (0.7 * shoulder_half, 0.03 * height), (0.65 * shoulder_half, 0.028 * height), outfit.bag_color)
    elif outfit.bag == "shoulder_bag":
        bag_at = _add(pelvis, (hip_half + thigh_r + 0.025 * height, 0.01, 0.02 * height))
        out.frustum(_add(bag_at, (0.0, 0.0, -0.06 * height)), _add(bag_at, (0.0, 0.0, 0.06 * height)),
                    (0.025 * height, 0.07 * height), (0.022 * height, 0.065 * height), outfit.bag_color, 0.02)
        out.capsule(_add(shoulders, (-0.8 * shoulder_half, 0.0, 0.0)), _add(bag_at, (0.0, 0.0, 0.05 * height)),
                    0.006 * height, outfit.bag_color, 0.08)
    return out.build()
