"""Scenes shared by the generators: backgrounds, object placement, rasterising and painting, JPEG output."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from goodtransfer.data.synthetic.kinds import KINDS, Polygon
from goodtransfer.io import InputError

JPEG_QUALITY = 90
MIN_IMAGE_SIDE = 24
MAX_IMAGE_SIDE = 4096
MAX_OBJECTS_LIMIT = 50


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


def _save_jpeg(pixels: np.ndarray, path: Path) -> None:
    Image.fromarray(pixels).convert("RGB").save(path, format="JPEG", quality=JPEG_QUALITY)


def _check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputError(f"{name}: expected an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise InputError(f"{name}: expected an integer {bound}, got {value}")
    return int(value)
