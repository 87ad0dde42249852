"""The catalogue of object kinds every generated dataset draws from: a shape plus a fill pattern."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Polygon = np.ndarray  # (N, 2) float array of x, y points in the unit frame


@dataclass(frozen=True)
class Kind:
    """One visual concept: polygons painted in order (True adds, False cuts a hole) plus a fill pattern."""

    name: str
    ops: tuple[tuple[Polygon, bool], ...]
    pattern: str  # one of PATTERNS


PATTERNS = ("solid", "stripes", "dots", "checker", "bands", "grid")
_PATTERN_ADJECTIVE = {
    "solid": "solid",
    "stripes": "striped",
    "dots": "dotted",
    "checker": "checkered",
    "bands": "banded",
    "grid": "gridded",
}


def _circle(radius: float = 1.0, cx: float = 0.0, cy: float = 0.0, sy: float = 1.0, n: int = 40) -> Polygon:
    angles = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    return np.stack([cx + radius * np.cos(angles), cy + sy * radius * np.sin(angles)], axis=1)


def _regular(n: int, radius: float = 1.0, phase_deg: float = -90.0) -> Polygon:
    angles = np.deg2rad(phase_deg) + np.arange(n) * 2.0 * math.pi / n
    return np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)


def _star(n: int, outer: float, inner: float) -> Polygon:
    radii = np.where(np.arange(2 * n) % 2 == 0, outer, inner)
    angles = -math.pi / 2 + np.arange(2 * n) * math.pi / n
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def _arc_band(outer: float, inner: float, shift_y: float, n: int = 24) -> Polygon:
    """Upper half of an annulus as one polygon (a 'rainbow'), shifted so it is roughly centred."""
    angles = np.linspace(math.pi, 2.0 * math.pi, n)
    top = np.stack([outer * np.cos(angles), outer * np.sin(angles) + shift_y], axis=1)
    bottom = np.stack([inner * np.cos(angles[::-1]), inner * np.sin(angles[::-1]) + shift_y], axis=1)
    return np.concatenate([top, bottom])


def _gear(teeth: int = 8, outer: float = 1.0, inner: float = 0.74) -> Polygon:
    step = 2.0 * math.pi / teeth
    points = []
    for i in range(teeth):
        base = i * step
        for angle, radius in ((0.0, inner), (0.18, outer), (0.5, outer), (0.68, inner)):
            theta = base + angle * step
            points.append((radius * math.cos(theta), radius * math.sin(theta)))
    return np.asarray(points)


def _heart(n: int = 48) -> Polygon:
    t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    x = 16.0 * np.sin(t) ** 3
    y = -(13.0 * np.cos(t) - 5.0 * np.cos(2 * t) - 2.0 * np.cos(3 * t) - np.cos(4 * t))
    return np.stack([x, y + 2.5], axis=1) / 16.5


# Outlines in the unit frame, one polygon each (x right, y down).
# fmt: off
_SQUARE = ((-0.78, -0.78), (0.78, -0.78), (0.78, 0.78), (-0.78, 0.78))
_CROSS = ((-0.32, -1), (0.32, -1), (0.32, -0.32), (1, -0.32), (1, 0.32), (0.32, 0.32), (0.32, 1), (-0.32, 1),
          (-0.32, 0.32), (-1, 0.32), (-1, -0.32), (-0.32, -0.32))
_DIAMOND = ((0, -1), (0.55, 0), (0, 1), (-0.55, 0))
_ARROW = ((-1, -0.22), (0.2, -0.22), (0.2, -0.6), (1, 0), (0.2, 0.6), (0.2, 0.22), (-1, 0.22))
_L_SHAPE = ((-0.7, -1), (-0.2, -1), (-0.2, 0.5), (0.7, 0.5), (0.7, 1), (-0.7, 1))
_T_SHAPE = ((-0.9, -0.9), (0.9, -0.9), (0.9, -0.45), (0.22, -0.45), (0.22, 0.95), (-0.22, 0.95),
            (-0.22, -0.45), (-0.9, -0.45))
_FRAME_OUTER = ((-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8))
_FRAME_INNER = ((-0.45, -0.45), (0.45, -0.45), (0.45, 0.45), (-0.45, 0.45))
_TRAPEZOID = ((-0.5, -0.6), (0.5, -0.6), (1, 0.6), (-1, 0.6))
_CHEVRON = ((-1, -0.6), (0, 0.2), (1, -0.6), (1, 0), (0, 0.8), (-1, 0))
_HOURGLASS = ((-0.8, -1), (0.8, -1), (0.12, 0), (0.8, 1), (-0.8, 1), (-0.12, 0))
_BAR = ((-0.6, -0.14), (0.6, -0.14), (0.6, 0.14), (-0.6, 0.14))
# fmt: on

Ops = tuple[tuple[Polygon, bool], ...]


def _fill(*polygons: Polygon | Sequence[tuple[float, float]]) -> Ops:
    return tuple((np.asarray(points, dtype=float), True) for points in polygons)


def _holed(
    outer: Polygon | Sequence[tuple[float, float]], hole: Polygon | Sequence[tuple[float, float]]
) -> Ops:
    return ((np.asarray(outer, dtype=float), True), (np.asarray(hole, dtype=float), False))


def _shape_table() -> list[tuple[str, Ops]]:
    """The shapes, in kind order; the first entries are the most distinct because small configs use them."""
    half_disc = np.concatenate([_circle(1.0, n=48)[24:], [[1.0, 0.0]]]) + np.array([0.0, 0.42])
    return [
        ("disc", _fill(_circle())),
        ("square", _fill(_SQUARE)),
        ("triangle", _fill(_regular(3, 1.0) + np.array([0.0, 0.2]))),
        ("star", _fill(_star(5, 1.0, 0.42))),
        ("ring", _holed(_circle(), _circle(0.55))),
        ("cross", _fill(_CROSS)),
        ("ellipse", _fill(_circle(sy=0.5))),
        ("hexagon", _fill(_regular(6, 1.0, 0.0))),
        ("crescent", _holed(_circle(), _circle(0.85, cx=0.45))),
        ("diamond", _fill(_DIAMOND)),
        ("pentagon", _fill(_regular(5, 1.0))),
        ("arrow", _fill(_ARROW)),
        ("heart", _fill(_heart())),
        ("L-shape", _fill(_L_SHAPE)),
        ("T-shape", _fill(_T_SHAPE)),
        ("frame", _holed(_FRAME_OUTER, _FRAME_INNER)),
        ("four-point star", _fill(_star(4, 1.0, 0.3))),
        ("half-disc", _fill(half_disc)),
        ("trapezoid", _fill(_TRAPEZOID)),
        ("chevron", _fill(_CHEVRON)),
        ("hourglass", _fill(_HOURGLASS)),
        ("gear", _holed(_gear(), _circle(0.3))),
        ("dumbbell", _fill(_circle(0.42, cx=-0.58), _circle(0.42, cx=0.58), _BAR)),
        ("arch", _fill(_arc_band(1.0, 0.55, 0.45))),
    ]


def _build_kinds() -> tuple[Kind, ...]:
    return tuple(
        Kind(name=name, ops=ops, pattern=PATTERNS[index % len(PATTERNS)])
        for index, (name, ops) in enumerate(_shape_table())
    )


KINDS: tuple[Kind, ...] = _build_kinds()


def kind_label(kind: int) -> str:
    """Human-readable name of a kind, e.g. 'striped square'."""
    entry = KINDS[kind]
    return f"{_PATTERN_ADJECTIVE[entry.pattern]} {entry.name}"
