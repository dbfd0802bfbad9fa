"""Who a synthetic person is: body shape, gait and weak stable cues, plus one outfit per capture session.

Identity must survive a clothing change, so everything that makes a person recognisable across sessions lives
here and is sampled once per person: body proportions (height, build, limb lengths, head size), gait (cadence,
stride, arm swing, bounce, sway, lean) and weak appearance cues (skin and hair tone, hair length). Clothing is
sampled per session, and the second session's outfit is forced to differ from the first (another top colour
family, a re-drawn pattern, usually other trousers), so colour alone cannot match across sessions.

All lengths are metres, angles degrees, colours 8-bit RGB tuples; everything is a frozen dataclass that turns
into JSON with `dataclasses.asdict`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Callable, TypeVar

import numpy as np

Color = tuple[int, int, int]
_Colored = TypeVar("_Colored")

# Clothing colour families (name -> base RGB). A sampled colour is a family's base with a small random shift,
# so "another family" means a visibly different colour, not a slightly different shade.
CLOTHING_FAMILIES: dict[str, Color] = {
    "black": (28, 28, 32), "white": (232, 232, 226), "grey": (128, 128, 132), "navy": (32, 42, 82),
    "blue": (42, 92, 182), "light_blue": (122, 172, 222), "red": (182, 32, 38), "maroon": (112, 32, 44),
    "green": (42, 122, 62), "olive": (102, 112, 52), "khaki": (192, 172, 122), "brown": (112, 76, 46),
    "yellow": (232, 202, 52), "orange": (232, 122, 32), "pink": (232, 142, 172), "purple": (112, 62, 142),
    "beige": (216, 202, 172), "teal": (32, 132, 132),
}
# Trousers and skirts come mostly in a few dark or muted families.
_BOTTOM_FAMILIES = ("black", "navy", "blue", "grey", "khaki", "beige", "brown", "olive", "maroon", "white")
_BOTTOM_WEIGHTS = (0.22, 0.16, 0.2, 0.12, 0.08, 0.05, 0.06, 0.05, 0.03, 0.03)
_SHOE_FAMILIES = ("black", "white", "grey", "brown", "navy", "red")

TOP_PATTERNS = ("plain", "stripes", "two_tone", "chest_logo")
BOTTOM_KINDS = ("trousers", "shorts", "skirt")
BAGS = ("none", "backpack", "shoulder_bag")

_SKIN_LIGHT, _SKIN_DARK = np.array([246, 214, 186.0]), np.array([92, 58, 40.0])
_HAIR_COLORS: dict[str, Color] = {
    "black": (22, 19, 18), "dark_brown": (58, 40, 28), "brown": (104, 72, 44), "blond": (196, 166, 108),
    "grey": (152, 150, 146), "red": (136, 62, 32),
}
_HAIR_WEIGHTS = (0.35, 0.25, 0.15, 0.1, 0.08, 0.07)


@dataclass(frozen=True)
class BodyShape:
    """Stable body proportions; the figure builder turns them into joint positions."""

    height: float  # m, feet to top of head
    build: float  # width multiplier (shoulders, hips, limb thickness)
    hip_ratio: float  # hip width relative to a typical figure of this build
    leg_ratio: float  # hip-joint height / height
    arm_ratio: float  # shoulder-to-wrist length / height
    head_ratio: float  # head height / height


@dataclass(frozen=True)
class Gait:
    """Stable walking style: the temporal signature that survives clothing changes."""

    cadence: float  # gait cycles (two steps) per second
    stride: float  # peak thigh swing from vertical, degrees
    knee: float  # peak knee flexion during swing, degrees
    arm_swing: float  # peak upper-arm swing, degrees
    bounce: float  # extra vertical oscillation of the body, m
    sway: float  # lateral sway of the upper body, m
    lean: float  # forward lean of the torso, degrees


@dataclass(frozen=True)
class Look:
    """Weak appearance cues that stay across sessions."""

    skin: Color
    hair: Color
    hair_long: bool


@dataclass(frozen=True)
class Identity:
    body: BodyShape
    gait: Gait
    look: Look


@dataclass(frozen=True)
class Outfit:
    """What a person wears in one session."""

    top_family: str
    top: Color
    top_secondary: Color
    top_pattern: str
    long_sleeves: bool
    bottom_family: str
    bottom: Color
    bottom_kind: str
    shoes: Color
    bag: str
    bag_color: Color
    hat: Color | None


def _jitter(rng: np.random.Generator, base, amount: float) -> Color:
    """A colour near `base`: overall brightness scaled by up to ±`amount`, each channel shifted by a little."""
    value = np.asarray(base, float) * rng.uniform(1 - amount, 1 + amount) + rng.normal(0, 6, 3)
    return tuple(int(c) for c in np.clip(np.rint(value), 0, 255))


def _family_color(rng: np.random.Generator, family: str) -> Color:
    return _jitter(rng, CLOTHING_FAMILIES[family], 0.12)


def sample_identity(rng: np.random.Generator) -> Identity:
    """Draw one person's body, gait and stable look."""
    body = BodyShape(
        height=float(np.clip(rng.normal(1.72, 0.09), 1.50, 1.96)),
        build=float(rng.uniform(0.85, 1.25)),
        hip_ratio=float(rng.uniform(0.9, 1.15)),
        leg_ratio=float(rng.uniform(0.45, 0.52)),
        arm_ratio=float(rng.uniform(0.31, 0.37)),
        head_ratio=float(rng.uniform(0.115, 0.14)),
    )
    gait = Gait(
        cadence=float(rng.uniform(0.78, 1.05)),
        stride=float(rng.uniform(17.0, 30.0)),
        knee=float(rng.uniform(28.0, 58.0)),
        arm_swing=float(rng.uniform(8.0, 40.0)),
        bounce=float(rng.uniform(0.0, 0.04)),
        sway=float(rng.uniform(0.0, 0.035)),
        lean=float(rng.uniform(-3.0, 9.0)),
    )
    skin = _jitter(rng, _SKIN_LIGHT + rng.uniform() * (_SKIN_DARK - _SKIN_LIGHT), 0.05)
    hair_name = rng.choice(list(_HAIR_COLORS), p=_HAIR_WEIGHTS)
    look = Look(skin=skin, hair=_jitter(rng, _HAIR_COLORS[hair_name], 0.1), hair_long=bool(rng.uniform() < 0.35))
    return Identity(body, gait, look)


def sample_outfit(rng: np.random.Generator, previous: Outfit | None = None) -> Outfit:
    """Draw one session's outfit; given the previous session's, change the top colour family and pattern,
    and the trousers' colour family with probability 0.65 (some people keep their trousers)."""
    top_families = [f for f in CLOTHING_FAMILIES if previous is None or f != previous.top_family]
    top_family = str(rng.choice(top_families))
    secondary_family = str(rng.choice([f for f in CLOTHING_FAMILIES if f != top_family]))
    patterns = [p for p in TOP_PATTERNS if previous is None or p != previous.top_pattern or p == "plain"]
    top_pattern = str(rng.choice(patterns))
    if previous is not None and rng.uniform() < 0.35:
        bottom_family, bottom_kind = previous.bottom_family, previous.bottom_kind
    else:
        weights = np.array(_BOTTOM_WEIGHTS)
        if previous is not None:  # a changed bottom must really change colour family
            weights[_BOTTOM_FAMILIES.index(previous.bottom_family)] = 0.0
        bottom_family = str(rng.choice(_BOTTOM_FAMILIES, p=weights / weights.sum()))
        bottom_kind = str(rng.choice(BOTTOM_KINDS, p=(0.72, 0.16, 0.12)))
    bag = str(rng.choice(BAGS, p=(0.55, 0.3, 0.15)))
    hat = _family_color(rng, str(rng.choice(list(CLOTHING_FAMILIES)))) if rng.uniform() < 0.18 else None
    return Outfit(
        top_family=top_family,
        top=_family_color(rng, top_family),
        top_secondary=_family_color(rng, secondary_family),
        top_pattern=top_pattern,
        long_sleeves=bool(rng.uniform() < 0.55),
        bottom_family=bottom_family,
        bottom=_family_color(rng, bottom_family),
        bottom_kind=bottom_kind,
        shoes=_family_color(rng, str(rng.choice(_SHOE_FAMILIES))),
        bag=bag,
        bag_color=_family_color(rng, str(rng.choice(list(CLOTHING_FAMILIES)))),
        hat=hat,
    )


def recolor(item: _Colored, change: Callable[[Color], Color]) -> _Colored:
    """A copy of a Look or Outfit with `change` applied to every colour field (e.g. a camera's lighting)."""
    colors = {f.name: change(value) for f in fields(item)
              if isinstance(value := getattr(item, f.name), tuple) and len(value) == 3}
    return replace(item, **colors)
