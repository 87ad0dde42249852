"""Deterministic generated stand-ins for ImageNet and PASCAL VOC2007, written in the real on-disk formats.

Both datasets draw from one shared catalogue of object *kinds*: a kind is a shape (disc, square, star, ...)
filled with a kind-specific pattern (solid, stripes, dots, ...).  ImageNet-style class ``i`` and the
``i``-th configured VOC class are both drawn as kind ``i``, so the two datasets share visual concepts and
transfer from one to the other is measurable.  Colour, size, position, rotation and aspect are randomised
per instance so that colour alone never gives the class away.

Every file is a pure function of the seed (one independent random stream per image), so the same seed
gives byte-identical trees.  Each tree is built in a hidden sibling directory and renamed onto ``root``
only when complete, so an interrupted run never leaves a folder that looks finished.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from goodtransfer.data.voc import VOC_CLASSES, VocObject, VocRecord, write_annotation, write_split
from goodtransfer.io import InputError, write_text

JPEG_QUALITY = 90
MIN_IMAGE_SIDE = 24
MAX_IMAGE_SIDE = 4096
MAX_OBJECTS_LIMIT = 50

# Fixed stream tags so that the random stream of one image never depends on how many other images exist.
_STREAM_IMAGENET_TRAIN = 1
_STREAM_IMAGENET_VAL = 2
_STREAM_VOC_IMAGE = 3
_STREAM_VOC_SPLIT = 4

Polygon = np.ndarray  # (N, 2) float array of x, y points in the unit frame


# --------------------------------------------------------------------------------------------------------
# Kind catalogue
# --------------------------------------------------------------------------------------------------------


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


def imagenet_wnid(index: int) -> str:
    """WordNet-id-like folder name for generated class ``index`` (real wnids start with n0/n1, ours n9)."""
    return f"n9{index:07d}"


# --------------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    """Where and how one object instance is drawn, in image pixel coordinates."""

    kind: int
    cx: float
    cy: float
    radius: float
    aspect: float  # width / height stretch of the unit shape before rotation
    theta: float  # rotation in radians


def _unit_grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return xx / max(h, w), yy / max(h, w)


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth [0, 1] texture: low-frequency noise, stripes, a checkerboard or a gradient."""
    style = rng.integers(4)
    x, y = _unit_grid((h, w))
    angle = rng.uniform(0.0, math.pi)
    u = x * math.cos(angle) + y * math.sin(angle)
    v = -x * math.sin(angle) + y * math.cos(angle)
    if style == 0:
        cells = rng.random((int(rng.integers(2, 7)), int(rng.integers(2, 7)))).astype(np.float32)
        return np.asarray(Image.fromarray(cells).resize((w, h), Image.Resampling.BICUBIC)).clip(0.0, 1.0)
    if style == 1:
        period = rng.uniform(0.18, 0.5)
        wave = 0.5 + 0.5 * np.sin(2.0 * math.pi * u / period + rng.uniform(0.0, 2.0 * math.pi))
        # Half the stripe backgrounds are hard-edged so that edges alone never mean "object".
        return (wave > 0.5).astype(np.float32) if rng.random() < 0.5 else wave
    if style == 2:
        cell = rng.uniform(0.15, 0.35)
        return ((np.floor(u / cell) + np.floor(v / cell)) % 2).astype(np.float32)
    span = float(u.max() - u.min()) or 1.0
    return (u - u.min()) / span


def background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """An (h, w, 3) float image mixing two related random colours through one or two textures."""
    base = rng.uniform(0.0, 255.0, size=3)
    other = np.clip(base + rng.uniform(-110.0, 110.0, size=3), 0.0, 255.0)
    t = _texture(rng, h, w)
    if rng.random() < 0.5:
        t = 0.65 * t + 0.35 * _texture(rng, h, w)
    return (base * (1.0 - t[..., None]) + other * t[..., None]).astype(np.float32)


def _pattern_mask(pattern: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """True where the secondary colour goes; u, v are object-frame coordinates in pattern units."""
    if pattern == "solid":
        return np.zeros(u.shape, dtype=bool)
    if pattern == "stripes":
        return np.floor(u / 0.4) % 2 == 1
    if pattern == "dots":
        du, dv = u % 0.55 - 0.275, v % 0.55 - 0.275
        return du * du + dv * dv < 0.15**2
    if pattern == "checker":
        return (np.floor(u / 0.5) + np.floor(v / 0.5)) % 2 == 1
    if pattern == "bands":
        return np.floor(np.sqrt(u * u + v * v) / 0.3) % 2 == 1
    if pattern == "grid":
        return (u % 0.5 < 0.15) | (v % 0.5 < 0.15)
    raise ValueError(f"unknown pattern {pattern!r}")


def _transformed_ops(p: Placement) -> list[tuple[Polygon, bool]]:
    sx, sy = p.radius * math.sqrt(p.aspect), p.radius / math.sqrt(p.aspect)
    cos_t, sin_t = math.cos(p.theta), math.sin(p.theta)
    out = []
    for points, add in KINDS[p.kind].ops:
        px, py = points[:, 0] * sx, points[:, 1] * sy
        out.append((np.stack([p.cx + cos_t * px - sin_t * py, p.cy + sin_t * px + cos_t * py], axis=1), add))
    return out


@dataclass(frozen=True)
class Raster:
    """The pixels an object covers: a boolean mask over the window [y0:y1, x0:x1] of the image."""

    x0: int
    y0: int
    mask: np.ndarray
    truncated: bool


def rasterise(p: Placement, h: int, w: int) -> Raster | None:
    """Draw the object's silhouette clipped to the image; None when nothing of it is inside."""
    ops = _transformed_ops(p)
    points = np.concatenate([pts for pts, _ in ops])
    lo, hi = points.min(axis=0), points.max(axis=0)
    truncated = bool(lo[0] < -0.5 or lo[1] < -0.5 or hi[0] > w - 0.5 or hi[1] > h - 0.5)
    x0, y0 = max(0, math.floor(lo[0])), max(0, math.floor(lo[1]))
    x1, y1 = min(w, math.ceil(hi[0]) + 1), min(h, math.ceil(hi[1]) + 1)
    if x1 <= x0 or y1 <= y0:
        return None
    canvas = Image.new("L", (x1 - x0, y1 - y0), 0)
    draw = ImageDraw.Draw(canvas)
    for pts, add in ops:
        draw.polygon([(float(x) - x0, float(y) - y0) for x, y in pts], fill=255 if add else 0)
    return Raster(x0=x0, y0=y0, mask=np.asarray(canvas) > 127, truncated=truncated)


def _object_colours(rng: np.random.Generator, behind: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A primary colour that stands out from what lies behind the object, and a related secondary one."""
    primary = rng.uniform(0.0, 255.0, size=3)
    for _ in range(12):
        if np.abs(primary - behind).mean() > 70.0:
            break
        primary = rng.uniform(0.0, 255.0, size=3)
    if rng.random() < 0.5:
        secondary = primary * rng.uniform(0.2, 0.5)
    else:
        secondary = primary + (255.0 - primary) * rng.uniform(0.5, 0.8)
    # A pattern needs contrast; near-black or near-white primaries would make darken/lighten invisible.
    if np.abs(secondary - primary).mean() < 45.0:
        secondary = 255.0 - primary
    return primary.astype(np.float32), secondary.astype(np.float32)


class Scene:
    """An image under construction plus an instance map, so visibility and occlusion can be measured."""

    def __init__(self, background: np.ndarray) -> None:
        self.pixels = background
        self.ids = np.zeros(background.shape[:2], dtype=np.int16)  # 0 background, k + 1 object k
        self.placements: list[Placement] = []
        self.rasters: list[Raster] = []

    @property
    def shape(self) -> tuple[int, int]:
        return self.ids.shape[0], self.ids.shape[1]

    def visible_counts(self) -> np.ndarray:
        return np.bincount(self.ids.ravel(), minlength=len(self.rasters) + 1)[1:]

    def add(
        self, rng: np.random.Generator, p: Placement, max_cover: float = 1.0, min_pixels: int = 12
    ) -> bool:
        """Paint ``p`` on top unless it is (nearly) invisible or would hide more than ``max_cover`` of an
        earlier object's drawn pixels; returns whether it was painted."""
        raster = rasterise(p, *self.shape)
        if raster is None or int(raster.mask.sum()) < min_pixels:
            return False
        # Slivers a few pixels wide would give degenerate boxes.
        if raster.mask.any(axis=0).sum() < 3 or raster.mask.any(axis=1).sum() < 3:
            return False
        h, w = raster.mask.shape
        window = (slice(raster.y0, raster.y0 + h), slice(raster.x0, raster.x0 + w))
        if self.rasters and max_cover < 1.0:
            under = self.ids[window][raster.mask]
            hidden = np.bincount(under, minlength=len(self.rasters) + 1)[1:]
            remaining = self.visible_counts() - hidden
            drawn = np.array([r.mask.sum() for r in self.rasters])
            if np.any(remaining < (1.0 - max_cover) * drawn):
                return False
        self._paint(rng, p, raster, window)
        self.ids[window][raster.mask] = len(self.rasters) + 1
        self.placements.append(p)
        self.rasters.append(raster)
        return True

    def _paint(
        self, rng: np.random.Generator, p: Placement, raster: Raster, window: tuple[slice, slice]
    ) -> None:
        region = self.pixels[window]
        primary, secondary = _object_colours(rng, region[raster.mask].mean(axis=0))
        h, w = raster.mask.shape
        yy, xx = np.mgrid[raster.y0 : raster.y0 + h, raster.x0 : raster.x0 + w].astype(np.float32)
        dx, dy = xx - p.cx, yy - p.cy
        cos_t, sin_t = math.cos(p.theta), math.sin(p.theta)
        # Pattern units follow the object (rotation, size) but never shrink below a few pixels,
        # otherwise small objects would alias into noise.
        scale = max(p.radius, 12.0)
        u = (cos_t * dx + sin_t * dy) / scale + rng.uniform(0.0, 1.0)
        v = (-sin_t * dx + cos_t * dy) / scale + rng.uniform(0.0, 1.0)
        second = _pattern_mask(KINDS[p.kind].pattern, u, v)
        colour = np.where(second[..., None], secondary, primary)
        # Mild directional shading so that solid objects are not perfectly flat.
        light = rng.uniform(0.0, 2.0 * math.pi)
        shade = 1.0 + 0.12 * (math.cos(light) * dx + math.sin(light) * dy) / max(p.radius, 1.0)
        painted = np.clip(colour * shade[..., None], 0.0, 255.0)
        region[raster.mask] = painted[raster.mask]

    def to_uint8(self) -> np.ndarray:
        return np.clip(np.rint(self.pixels), 0, 255).astype(np.uint8)


def random_placement(
    rng: np.random.Generator,
    kind: int,
    h: int,
    w: int,
    radius_range: tuple[float, float],
    centre_range: tuple[float, float] = (0.0, 1.0),
) -> Placement:
    """Sample a placement; radii are fractions of the shorter side, centres fractions of each side."""
    side = min(h, w)
    return Placement(
        kind=kind,
        cx=float(rng.uniform(*centre_range) * w),
        cy=float(rng.uniform(*centre_range) * h),
        radius=float(rng.uniform(*radius_range) * side),
        aspect=float(math.exp(rng.uniform(-0.25, 0.25))),
        theta=float(rng.uniform(0.0, 2.0 * math.pi)),
    )


def plain_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A nearly uniform grey (level 90..160, faint noise): nothing in it tells one image from another."""
    level = rng.uniform(90.0, 160.0)
    noise = rng.normal(0.0, 4.0, size=(h, w, 1)).astype(np.float32)
    return np.full((h, w, 3), level, dtype=np.float32) + noise


# ImageNet-style images: the dominant object's radius as a fraction of the side, by default.
OBJECT_SCALE = (0.24, 0.4)
BACKGROUNDS = ("textured", "plain")


def render_imagenet_image(
    rng: np.random.Generator,
    kind: int,
    size: int,
    background_style: str = "textured",
    object_scale: tuple[float, float] = OBJECT_SCALE,
) -> np.ndarray:
    """One dominant object of ``kind``, sometimes with small distractors of other kinds behind it.

    ``background_style`` "plain" leaves the object as the only thing that tells images apart, which
    instance discrimination needs on a few hundred tiny images: random textured backgrounds (and their
    colours) are then the easiest cue to tell two images apart, and carry no class information.
    """
    scene = Scene(
        background(rng, size, size) if background_style == "textured" else plain_background(rng, size, size)
    )
    others = [k for k in range(len(KINDS)) if k != kind]
    if rng.random() < 0.4:
        for _ in range(int(rng.integers(1, 3))):
            distractor = others[int(rng.integers(len(others)))]
            scene.add(rng, random_placement(rng, distractor, size, size, (0.06, 0.12)))
    # The dominant object goes last (on top) and must always be painted: retry, then fall back to centre.
    for _ in range(20):
        if scene.add(rng, random_placement(rng, kind, size, size, object_scale, (0.38, 0.62))):
            break
    else:
        scene.add(rng, Placement(kind, size / 2.0, size / 2.0, 0.3 * size, 1.0, 0.0), min_pixels=1)
    return scene.to_uint8()


# Objects whose box is shorter than this fraction of the image's short side, or which are hidden by more
# than DIFFICULT_HIDDEN of their drawn pixels, are marked difficult (as VOC does for tiny/occluded ones).
DIFFICULT_SIDE = 0.15
DIFFICULT_HIDDEN = 0.4
SMALL_OBJECT_PROB = 0.12


def _voc_objects(scene: Scene, classes: Sequence[str]) -> list[VocObject]:
    """Tight 1-based inclusive boxes around each object's *visible* pixels, with VOC flags."""
    h, w = scene.shape
    counts = scene.visible_counts()
    objects = []
    for index, (p, raster) in enumerate(zip(scene.placements, scene.rasters, strict=True)):
        mh, mw = raster.mask.shape
        visible = scene.ids[raster.y0 : raster.y0 + mh, raster.x0 : raster.x0 + mw] == index + 1
        rows, cols = np.flatnonzero(visible.any(axis=1)), np.flatnonzero(visible.any(axis=0))
        if rows.size == 0:
            continue
        box = (
            raster.x0 + int(cols[0]) + 1,
            raster.y0 + int(rows[0]) + 1,
            raster.x0 + int(cols[-1]) + 1,
            raster.y0 + int(rows[-1]) + 1,
        )
        longest = max(box[2] - box[0] + 1, box[3] - box[1] + 1)
        hidden = 1.0 - counts[index] / raster.mask.sum()
        difficult = longest < DIFFICULT_SIDE * min(h, w) or hidden > DIFFICULT_HIDDEN
        objects.append(
            VocObject(name=classes[p.kind], bbox=box, difficult=bool(difficult), truncated=raster.truncated)
        )
    return objects


def render_voc_image(
    rng: np.random.Generator, classes: Sequence[str], h: int, w: int, max_objects: int, first: int | None
) -> tuple[np.ndarray, list[VocObject]]:
    """1..max_objects objects of the configured classes (class i drawn as kind i), overlapping a little.

    ``first`` forces the class of the first, always-present, clearly visible object (used to guarantee
    every class occurs in every split)."""
    scene = Scene(background(rng, h, w))
    count = int(rng.integers(1, max_objects + 1))
    kind = first if first is not None else int(rng.integers(len(classes)))
    for _ in range(20):
        if scene.add(rng, random_placement(rng, kind, h, w, (0.12, 0.3), (0.3, 0.7))):
            break
    else:
        scene.add(rng, Placement(kind, w / 2.0, h / 2.0, 0.25 * min(h, w), 1.0, 0.0), min_pixels=1)
    for _ in range(count - 1):
        kind = int(rng.integers(len(classes)))
        radii = (0.035, 0.06) if rng.random() < SMALL_OBJECT_PROB else (0.08, 0.28)
        for _ in range(10):
            if scene.add(rng, random_placement(rng, kind, h, w, radii), max_cover=0.45):
                break
    return scene.to_uint8(), _voc_objects(scene, classes)


# --------------------------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------------------------


def _save_jpeg(pixels: np.ndarray, path: Path) -> None:
    Image.fromarray(pixels).convert("RGB").save(path, format="JPEG", quality=JPEG_QUALITY)


@contextmanager
def building_directory(root: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty hidden sibling of ``root``; on success swap it in place of ``root``."""
    target = Path(root)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        yield tmp
        if target.exists() or target.is_symlink():
            # A directory cannot be os.replace'd onto a non-empty one: move the old tree aside first.
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / "tree")
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputError(f"{name}: expected an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise InputError(f"{name}: expected an integer {bound}, got {value}")
    return int(value)


def generate_imagenet(
    root: str | os.PathLike[str],
    *,
    num_classes: int,
    train_per_class: int,
    val_per_class: int,
    image_size: int,
    seed: int,
    background: str = "textured",
    object_scale: Sequence[float] = OBJECT_SCALE,
) -> None:
    """Write ``root/{train,val}/<wnid>/<wnid>_<n>.JPEG`` and ``root/classes.txt`` ('<wnid> <name>' lines).

    ``background`` is "textured" or "plain"; ``object_scale`` the (low, high) radius of the dominant
    object as a fraction of the image side."""
    num_classes = _check_int("num_classes", num_classes, 1, len(KINDS))
    counts = {
        "train": _check_int("train_per_class", train_per_class, 1),
        "val": _check_int("val_per_class", val_per_class, 1),
    }
    size = _check_int("image_size", image_size, MIN_IMAGE_SIDE, MAX_IMAGE_SIDE)
    seed = _check_int("seed", seed, 0)
    if background not in BACKGROUNDS:
        raise InputError(f"background: expected one of {list(BACKGROUNDS)}, got {background!r}")
    scale = _check_object_scale(object_scale)
    streams = {"train": _STREAM_IMAGENET_TRAIN, "val": _STREAM_IMAGENET_VAL}
    with building_directory(root) as tmp:
        for split, per_class in counts.items():
            for cls in range(num_classes):
                folder = tmp / split / imagenet_wnid(cls)
                folder.mkdir(parents=True)
                for n in range(per_class):
                    rng = np.random.default_rng([seed, streams[split], cls, n])
                    _save_jpeg(
                        render_imagenet_image(rng, cls, size, background, scale),
                        folder / f"{imagenet_wnid(cls)}_{n + 1}.JPEG",
                    )
        lines = [f"{imagenet_wnid(cls)} {kind_label(cls)}\n" for cls in range(num_classes)]
        write_text(tmp / "classes.txt", "".join(lines))


def _check_object_scale(value: Sequence[float]) -> tuple[float, float]:
    if isinstance(value, str) or not isinstance(value, Sequence) or len(value) != 2:
        raise InputError(f"object_scale: expected (low, high) fractions of the side, got {value!r}")
    low, high = (float(v) for v in value)
    if not 0.05 <= low <= high <= 0.5:
        raise InputError(f"object_scale: expected 0.05 <= low <= high <= 0.5, got {value!r}")
    return low, high


def _check_classes(classes: Sequence[str]) -> tuple[str, ...]:
    """Any names (a user may call VOC's pottedplant "potted plant"), at most as many as VOC has."""
    if isinstance(classes, str) or not isinstance(classes, Sequence) or not classes:
        raise InputError(f"classes: expected a non-empty list of VOC class names, got {classes!r}")
    if len(classes) > len(VOC_CLASSES):
        raise InputError(f"classes: {len(classes)} names; expected at most {len(VOC_CLASSES)}, as VOC has")
    blank = [name for name in classes if not isinstance(name, str) or not name.strip()]
    if blank:
        raise InputError(f"classes: {blank} are not names; expected non-empty text")
    if len(set(classes)) != len(classes):
        raise InputError(f"classes: expected distinct names, got {list(classes)}")
    return tuple(classes)


def _check_size_range(image_size: int | Sequence[int]) -> tuple[int, int]:
    """Accept one side (square images) or a (min, max) side range (varied aspect ratio)."""
    if isinstance(image_size, Sequence) and not isinstance(image_size, str):
        if len(image_size) != 2:
            raise InputError(f"image_size: expected an integer or a (min, max) pair, got {image_size!r}")
        low = _check_int("image_size[0]", image_size[0], MIN_IMAGE_SIDE, MAX_IMAGE_SIDE)
        high = _check_int("image_size[1]", image_size[1], MIN_IMAGE_SIDE, MAX_IMAGE_SIDE)
        if low > high:
            raise InputError(f"image_size: expected min <= max, got {tuple(image_size)}")
        return low, high
    side = _check_int("image_size", image_size, MIN_IMAGE_SIDE, MAX_IMAGE_SIDE)
    return side, side


def voc_image_id(number: int) -> str:
    return f"{number:06d}"


def generate_voc(
    root: str | os.PathLike[str],
    *,
    classes: Sequence[str],
    trainval_images: int,
    test_images: int,
    image_size: int | tuple[int, int],
    max_objects: int,
    seed: int,
) -> None:
    """Write a VOC2007-style tree: JPEGImages/, Annotations/ and ImageSets/Main/{trainval,test}.txt.

    The i-th name in ``classes`` is drawn as kind i (the same kind as ImageNet-style class i), and the
    first ``len(classes)`` images of each split each start with one clearly visible object of a
    different class, so every class occurs in both splits."""
    names = _check_classes(classes)
    n_trainval = _check_int("trainval_images", trainval_images, len(names))
    n_test = _check_int("test_images", test_images, len(names))
    low, high = _check_size_range(image_size)
    max_objects = _check_int("max_objects", max_objects, 1, MAX_OBJECTS_LIMIT)
    seed = _check_int("seed", seed, 0)
    # VOC2007 interleaves trainval and test ids, so assign ids to splits by a seeded shuffle.
    order = np.random.default_rng([seed, _STREAM_VOC_SPLIT]).permutation(n_trainval + n_test) + 1
    splits = {"trainval": sorted(order[:n_trainval].tolist()), "test": sorted(order[n_trainval:].tolist())}
    with building_directory(root) as tmp:
        for sub in ("JPEGImages", "Annotations"):
            (tmp / sub).mkdir()
        for split, numbers in splits.items():
            for position, number in enumerate(numbers):
                rng = np.random.default_rng([seed, _STREAM_VOC_IMAGE, number])
                w, h = (int(side) for side in rng.integers(low, high + 1, size=2))
                first = position if position < len(names) else None
                pixels, objects = render_voc_image(rng, names, h, w, max_objects, first)
                image_id = voc_image_id(number)
                _save_jpeg(pixels, tmp / "JPEGImages" / f"{image_id}.jpg")
                # The XML <folder> comes from this path; a fixed 'VOC2007' (as in the real files) keeps the
                # annotation bytes independent of where the tree is written.
                record = VocRecord(
                    image_id=image_id,
                    image_path=Path("VOC2007", "JPEGImages", f"{image_id}.jpg"),
                    width=w,
                    height=h,
                    objects=tuple(objects),
                )
                write_annotation(tmp / "Annotations" / f"{image_id}.xml", record)
            write_split(tmp, split, [voc_image_id(n) for n in numbers])


# --------------------------------------------------------------------------------------------------------
# Command line (used by the Snakemake rules)
# --------------------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m goodtransfer.data.synthetic",
        description="Generate ImageNet-style or VOC2007-style synthetic datasets.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    imagenet = sub.add_parser("imagenet", help="ImageNet-style class-folder dataset")
    imagenet.add_argument("--root", required=True, type=Path)
    imagenet.add_argument("--num-classes", required=True, type=int)
    imagenet.add_argument("--train-per-class", required=True, type=int)
    imagenet.add_argument("--val-per-class", required=True, type=int)
    imagenet.add_argument("--image-size", required=True, type=int)
    imagenet.add_argument("--seed", required=True, type=int)
    voc = sub.add_parser("voc", help="PASCAL VOC2007-style detection dataset")
    voc.add_argument("--root", required=True, type=Path)
    voc.add_argument("--classes", required=True, nargs="+", metavar="NAME")
    voc.add_argument("--trainval-images", required=True, type=int)
    voc.add_argument("--test-images", required=True, type=int)
    voc.add_argument(
        "--image-size",
        required=True,
        type=int,
        nargs="+",
        metavar="SIDE",
        help="one side (square images) or MIN MAX sides (varied aspect ratio)",
    )
    voc.add_argument("--max-objects", required=True, type=int)
    voc.add_argument("--seed", required=True, type=int)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "imagenet":
            generate_imagenet(
                args.root,
                num_classes=args.num_classes,
                train_per_class=args.train_per_class,
                val_per_class=args.val_per_class,
                image_size=args.image_size,
                seed=args.seed,
            )
        else:
            size = args.image_size[0] if len(args.image_size) == 1 else tuple(args.image_size)
            generate_voc(
                args.root,
                classes=args.classes,
                trainval_images=args.trainval_images,
                test_images=args.test_images,
                image_size=size,
                max_objects=args.max_objects,
                seed=args.seed,
            )
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
