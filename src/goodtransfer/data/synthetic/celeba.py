"""The CelebA + MAFL stand-in: cartoon faces whose landmarks are written exactly where the eyes, nose tip
and mouth corners are painted; an identity is a persistent combination of skin tone, head shape, eye
spacing, hair, lips and feature positions.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from goodtransfer.data.celeba import (
    CELEBA_IDENTITIES,
    IDENTITY_FILE,
    IMAGE_DIR,
    LANDMARK_HEADER,
    LANDMARKS_FILE,
    MAFL_FILES,
    PARTITION_FILE,
    PARTITIONS,
)
from goodtransfer.data.synthetic.common import JPEG_QUALITY, background
from goodtransfer.io import InputError, building_directory, write_text

# Fixed stream tags: one image's random stream never depends on how many other images exist.
_STREAM_SPLIT, _STREAM_IDENTITY, _STREAM_IMAGE = 1, 2, 3


@dataclass(frozen=True)
class FaceIdentity:
    """What stays the same across one person's images (lengths in head half-width/half-height units)."""

    skin: np.ndarray
    lips: np.ndarray
    hair: np.ndarray
    iris: np.ndarray
    head_width: float  # head half-width as a fraction of the image's face scale
    aspect: float  # head half-height / half-width
    eye_spacing: float
    eye_height: float
    eye_size: float
    nose_height: float
    mouth_height: float
    mouth_width: float
    hairline: float


def _hair_colour(rng: np.random.Generator) -> np.ndarray:
    if rng.uniform() < 0.7:  # dark hair, else blond
        return rng.uniform(10, 90, 3)
    return np.array([200, 170, 90]) + rng.uniform(-30, 30, 3)


def random_identity(rng: np.random.Generator) -> FaceIdentity:
    tone = rng.uniform()
    skin = np.array([255, 224, 196]) * (1 - tone) + np.array([150, 95, 60]) * tone + rng.uniform(-10, 10, 3)
    return FaceIdentity(
        skin=skin.clip(0, 255),
        lips=np.array([rng.uniform(150, 200), rng.uniform(25, 55), rng.uniform(50, 90)]),
        hair=_hair_colour(rng),
        iris=rng.uniform(5, 45, 3),
        head_width=rng.uniform(0.25, 0.31),
        aspect=rng.uniform(1.15, 1.4),
        eye_spacing=rng.uniform(0.32, 0.44),
        eye_height=rng.uniform(-0.22, -0.08),
        eye_size=rng.uniform(0.09, 0.13),
        nose_height=rng.uniform(0.12, 0.25),
        mouth_height=rng.uniform(0.42, 0.55),
        mouth_width=rng.uniform(0.2, 0.3),
        hairline=rng.uniform(-0.65, -0.4),
    )


def _ellipse(
    rx: float, ry: float, cy: float = 0.0, start: float = 0.0, stop: float = 2 * math.pi
) -> np.ndarray:
    t = np.linspace(start, stop, 48)
    return np.stack([rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def _rgb(colour: np.ndarray) -> tuple[int, ...]:
    return tuple(int(c) for c in np.clip(colour, 0, 255))


@dataclass(frozen=True)
class _Canvas:
    """A face frame on an image: (u, v) in head half-width/half-height units, rotated by the roll."""

    draw: ImageDraw.ImageDraw
    centre: np.ndarray
    radii: np.ndarray
    roll: float

    def to_image(self, face: np.ndarray) -> np.ndarray:
        c, s = math.cos(self.roll), math.sin(self.roll)
        return self.centre + (np.atleast_2d(face) * self.radii) @ np.array([[c, s], [-s, c]])

    def polygon(self, face: np.ndarray, colour: np.ndarray) -> None:
        self.draw.polygon([tuple(p) for p in self.to_image(face)], fill=_rgb(colour))

    def disc(self, xy: np.ndarray, rx: float, ry: float, colour: np.ndarray) -> None:
        x, y = xy
        self.draw.ellipse((x - rx, y - ry, x + rx, y + ry), fill=_rgb(colour))


def _feature_points(rng: np.random.Generator, person: FaceIdentity, yaw: float) -> np.ndarray:
    """Eyes, nose tip and mouth corners in the face frame; yaw shifts the inner face sideways."""
    mouth = person.mouth_width * rng.uniform(0.9, 1.15)
    eyes, nose, lips = person.eye_height, person.nose_height, person.mouth_height
    points = [
        [-person.eye_spacing, eyes],
        [person.eye_spacing, eyes],
        [0.3 * yaw, nose],
        [-mouth, lips],
        [mouth, lips],
    ]
    return np.array(points) + [yaw, 0] + rng.uniform(-0.02, 0.02, (5, 2))


def _draw_features(canvas: _Canvas, person: FaceIdentity, face: np.ndarray, points: np.ndarray) -> None:
    rx, ry = canvas.radii
    eye_r, brow = max(2.0, person.eye_size * rx), np.array([[-0.16, -0.17], [0.16, -0.19]])
    for k in (0, 1):
        line = [tuple(p) for p in canvas.to_image(brow + face[k])]
        canvas.draw.line(line, fill=_rgb(person.hair * 0.7), width=max(1, round(0.06 * rx)))
        canvas.disc(points[k], 1.9 * eye_r, 1.1 * eye_r, np.array([235, 235, 230]))  # sclera
        canvas.disc(points[k], eye_r, eye_r, person.iris)
    top = (face[0] + face[1]) / 2 + [0, 0.05]
    canvas.polygon(
        np.array([top - [0.06, 0], top + [0.06, 0], face[2] + [0.1, 0], face[2] - [0.1, 0]]),
        person.skin * 0.82,
    )
    nostril = max(1.5, 0.06 * rx)
    canvas.disc(points[2], nostril, nostril, person.skin * 0.45)
    width = max(2, round(0.07 * ry))
    canvas.draw.line([tuple(points[3]), tuple(points[4])], fill=_rgb(person.lips), width=width)
    for corner in points[3:]:
        canvas.disc(corner, max(1.0, width / 2), max(1.0, width / 2), person.lips)


def render_face(
    rng: np.random.Generator, person: FaceIdentity, h: int, w: int
) -> tuple[np.ndarray, np.ndarray]:
    """An (h, w, 3) uint8 face of ``person`` in a random pose and its (5, 2) integer pixel landmarks."""
    rx = person.head_width * min(w, h * 178 / 218) * rng.uniform(0.9, 1.1)
    centre = np.array([w / 2, h * 0.55]) + rng.uniform(-0.04, 0.04, 2) * min(h, w)
    roll, yaw = rng.uniform(-0.15, 0.15), rng.uniform(-0.12, 0.12)
    image = Image.fromarray(background(rng, h, w).clip(0, 255).astype(np.uint8))
    canvas = _Canvas(ImageDraw.Draw(image), centre, np.array([rx, rx * person.aspect]), roll)
    face = _feature_points(rng, person, yaw)
    # Features are drawn at the rounded points, so the written integer landmarks are exactly on them.
    points = np.rint(canvas.to_image(face)).astype(int)
    canvas.polygon(_ellipse(2.2, 1.0, cy=2.2), rng.uniform(0, 255, 3))  # shoulders
    canvas.polygon(np.array([[-0.4, 0.5], [0.4, 0.5], [0.45, 1.4], [-0.45, 1.4]]), person.skin * 0.85)  # neck
    canvas.polygon(_ellipse(1, 1), person.skin)
    hair = _ellipse(1.1, 1.1, start=math.pi, stop=2 * math.pi)
    canvas.polygon(np.concatenate([hair, [[0.95, person.hairline], [-0.95, person.hairline]]]), person.hair)
    _draw_features(canvas, person, face, points)
    return np.asarray(image), points


def _int_arg(name: str, value: object, low: int, high: int | None = None) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or value < low
        or (high is not None and value > high)
    ):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise InputError(f"celeba generate: {name} is {value!r}; expected an integer {bound}")
    return int(value)


@dataclass(frozen=True)
class _Assignment:
    owner: np.ndarray  # image i shows person owner[i]
    numbers: np.ndarray  # CelebA identity number of each person
    partition: np.ndarray  # 0/1/2 per person: CelebA's partitions share no identities
    mafl: dict[str, np.ndarray]  # image indices of each MAFL split


def _assign(rng: np.random.Generator, people: int, per: int, n_train: int, n_test: int) -> _Assignment:
    total = people * per
    owner = rng.permutation(total) // per
    if people <= CELEBA_IDENTITIES:
        numbers = np.sort(rng.choice(CELEBA_IDENTITIES, people, replace=False)) + 1
    else:
        numbers = np.arange(1, people + 1)
    order, partition = rng.permutation(people), np.full(people, PARTITIONS["test"])
    partition[order[: round(0.8 * people)]] = PARTITIONS["train"]
    partition[order[round(0.8 * people) : round(0.9 * people)]] = PARTITIONS["val"]
    picked = rng.permutation(total)
    mafl = {"train": np.sort(picked[:n_train]), "test": np.sort(picked[n_train : n_train + n_test])}
    return _Assignment(owner, numbers, partition, mafl)


def generate(
    root: str | os.PathLike[str],
    *,
    seed: int,
    identities: int,
    images_per_identity: int,
    mafl_train: int,
    mafl_test: int,
    image_size: tuple[int, int] = (218, 178),
) -> None:
    """Write a CelebA + MAFL stand-in: ``identities x images_per_identity`` faces of (h, w) ``image_size``."""
    seed = _int_arg("seed", seed, 0)
    people, per = (
        _int_arg("identities", identities, 1),
        _int_arg("images_per_identity", images_per_identity, 1),
    )
    if len(image_size) != 2:
        raise InputError(f"celeba generate: image_size is {image_size!r}; expected (height, width)")
    h, w = (
        _int_arg("image_size[0]", image_size[0], 32, 218),
        _int_arg("image_size[1]", image_size[1], 32, 178),
    )
    n_train, n_test = _int_arg("mafl_train", mafl_train, 1), _int_arg("mafl_test", mafl_test, 1)
    if n_train + n_test > people * per:
        raise InputError(f"celeba generate: mafl_train + mafl_test = {n_train + n_test}; "
                         f"expected at most the {people * per} images")  # fmt: skip
    plan = _assign(np.random.default_rng([seed, _STREAM_SPLIT]), people, per, n_train, n_test)
    persons = [random_identity(np.random.default_rng([seed, _STREAM_IDENTITY, k])) for k in range(people)]
    names = [f"{i + 1:06d}.jpg" for i in range(people * per)]
    with building_directory(root) as tmp:
        (tmp / IMAGE_DIR).mkdir()
        rows = []
        for i, name in enumerate(names):
            rng = np.random.default_rng([seed, _STREAM_IMAGE, i])
            pixels, points = render_face(rng, persons[plan.owner[i]], h, w)
            Image.fromarray(pixels).save(tmp / IMAGE_DIR / name, format="JPEG", quality=JPEG_QUALITY)
            rows.append(f"{name} " + " ".join(f"{v:4d}" for v in points.reshape(-1)) + "\n")
        write_text(tmp / LANDMARKS_FILE, f"{len(names)}\n{' '.join(LANDMARK_HEADER)}\n" + "".join(rows))
        ids = [f"{n} {plan.numbers[plan.owner[i]]}\n" for i, n in enumerate(names)]
        write_text(tmp / IDENTITY_FILE, "".join(ids))
        parts = [f"{n} {plan.partition[plan.owner[i]]}\n" for i, n in enumerate(names)]
        write_text(tmp / PARTITION_FILE, "".join(parts))
        (tmp / "MAFL").mkdir()
        for split, relative in MAFL_FILES.items():
            write_text(tmp / relative, "".join(f"{names[i]}\n" for i in plan.mafl[split]))
