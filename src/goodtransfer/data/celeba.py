"""CelebA (aligned) with the MAFL landmark split: list readers, an in-place check and a generated stand-in.

The layout is torchvision's ``CelebA`` folder (the four list files at the root, not in ``Anno/``/``Eval/``)
plus the MAFL split lists of Zhang et al. (2014), which name CelebA files and take their 5 landmarks
from ``list_landmarks_align_celeba.txt``. Landmarks are pixel coordinates in the 178x218 aligned image;
"left eye" is the eye on the image's left. The stand-in draws cartoon faces whose landmarks are written
exactly where the eyes, nose tip and mouth corners are painted; an identity is a persistent combination
of skin tone, head shape, eye spacing, hair, lips and feature positions.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from goodtransfer.data.images import ImageCheck
from goodtransfer.data.synthetic import JPEG_QUALITY, background, building_directory
from goodtransfer.io import InputError, write_text

IMAGE_DIR = "img_align_celeba"
LANDMARKS_FILE = "list_landmarks_align_celeba.txt"
IDENTITY_FILE = "identity_CelebA.txt"
PARTITION_FILE = "list_eval_partition.txt"
MAFL_FILES = {"train": "MAFL/training.txt", "test": "MAFL/testing.txt"}
LANDMARK_HEADER = (
    "lefteye_x", "lefteye_y", "righteye_x", "righteye_y", "nose_x", "nose_y",
    "leftmouth_x", "leftmouth_y", "rightmouth_x", "rightmouth_y",
)  # fmt: skip
PARTITIONS = {"train": 0, "val": 1, "test": 2}
LAYOUT = (
    f"<root>/{IMAGE_DIR}/<000001>.jpg, <root>/{LANDMARKS_FILE} (count, header, '<file> x1 y1 ... x5 y5'), "
    f"<root>/{IDENTITY_FILE} ('<file> <id>'), <root>/{PARTITION_FILE} ('<file> 0|1|2'), "
    f"<root>/{MAFL_FILES['train']} and <root>/{MAFL_FILES['test']} (one file name per line)"
)
CELEBA_IDENTITIES = 10177

# Fixed stream tags: one image's random stream never depends on how many other images exist.
_STREAM_SPLIT, _STREAM_IDENTITY, _STREAM_IMAGE = 1, 2, 3


# --------------------------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------------------------


def _lines(path: Path) -> list[tuple[int, list[str]]]:
    """Non-blank lines of ``path`` as (1-based line number, whitespace-separated fields)."""
    if not path.is_file():
        raise InputError(f"{path}: missing; expected the CelebA layout {LAYOUT}")
    rows = [(n, line.split()) for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)]
    return [(n, fields) for n, fields in rows if fields]


def _file_name(path: Path, line: int, name: str) -> str:
    # A path separator would let a listed name escape the image folder.
    if "/" in name or "\\" in name or name in (".", ".."):
        raise InputError(f"{path}:{line}: {name!r} is not a plain image file name like 000001.jpg")
    return name


def _unique(path: Path, line: int, name: str, seen: dict | set) -> str:
    if name in seen:
        raise InputError(f"{path}:{line}: {name} is listed more than once")
    return _file_name(path, line, name)


def landmarks(root: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """``list_landmarks_align_celeba.txt`` as {file: (5, 2) float array of x, y pixel coordinates}."""
    path = Path(root) / LANDMARKS_FILE
    rows = _lines(path)
    if len(rows) < 2 or len(rows[0][1]) != 1 or not rows[0][1][0].isdigit():
        raise InputError(f"{path}:1: expected the image count on the first line, then the header line")
    if tuple(rows[1][1]) != LANDMARK_HEADER:
        raise InputError(f"{path}:{rows[1][0]}: header is {' '.join(rows[1][1])!r}; "
                         f"expected {' '.join(LANDMARK_HEADER)!r}")  # fmt: skip
    points: dict[str, np.ndarray] = {}
    for line, fields in rows[2:]:
        if len(fields) != 11:
            raise InputError(f"{path}:{line}: has {len(fields)} fields; expected '<file> x1 y1 ... x5 y5'")
        try:
            values = np.array([float(v) for v in fields[1:]])
        except ValueError:
            raise InputError(f"{path}:{line}: coordinates {fields[1:]} are not all numbers") from None
        if not np.isfinite(values).all():
            raise InputError(f"{path}:{line}: coordinates {fields[1:]} are not all finite")
        points[_unique(path, line, fields[0], points)] = values.reshape(5, 2)
    if int(rows[0][1][0]) != len(points):
        raise InputError(f"{path}:1: says {rows[0][1][0]} images but lists {len(points)}")
    return points


def _file_int_table(path: Path, what: str, allowed: set[int] | None = None) -> dict[str, int]:
    table: dict[str, int] = {}
    for line, fields in _lines(path):
        if len(fields) != 2 or not fields[1].isdigit() or (allowed and int(fields[1]) not in allowed):
            expected = f"one of {sorted(allowed)}" if allowed else "a non-negative integer"
            raise InputError(
                f"{path}:{line}: {' '.join(fields)!r}; expected '<file> <{what}>' with {expected}"
            )
        table[_unique(path, line, fields[0], table)] = int(fields[1])
    return table


def identities(root: str | os.PathLike[str]) -> dict[str, int]:
    """``identity_CelebA.txt`` as {file: CelebA identity number (1..10177 in the real data)}."""
    return _file_int_table(Path(root) / IDENTITY_FILE, "identity")


def eval_partition(root: str | os.PathLike[str]) -> dict[str, int]:
    """``list_eval_partition.txt`` as {file: 0 (train) | 1 (val) | 2 (test)}."""
    return _file_int_table(Path(root) / PARTITION_FILE, "partition", set(PARTITIONS.values()))


def _mafl_entries(root: Path, split: str) -> tuple[Path, list[tuple[int, str]]]:
    if split not in MAFL_FILES:
        raise InputError(f"MAFL split {split!r} is unknown; expected one of {sorted(MAFL_FILES)}")
    path = root / MAFL_FILES[split]
    entries: list[tuple[int, str]] = []
    seen: set[str] = set()
    for line, fields in _lines(path):
        if len(fields) != 1:
            raise InputError(f"{path}:{line}: {' '.join(fields)!r}; expected one image file name per line")
        seen.add(_unique(path, line, fields[0], seen))
        entries.append((line, fields[0]))
    if not entries:
        raise InputError(f"{path}: lists no images; expected one image file name per line")
    return path, entries


def mafl_split(root: str | os.PathLike[str], split: str) -> list[str]:
    """The file names of MAFL ``train`` (``MAFL/training.txt``) or ``test`` (``MAFL/testing.txt``)."""
    return [name for _, name in _mafl_entries(Path(root), split)[1]]


def mafl_samples(
    root: str | os.PathLike[str], split: str, points: dict[str, np.ndarray] | None = None
) -> tuple[list[Path], np.ndarray]:
    """Image paths of a MAFL split and their (N, 5, 2) landmarks; every listed file must have landmarks."""
    root = Path(root)
    points = landmarks(root) if points is None else points
    path, entries = _mafl_entries(root, split)
    for line, name in entries:
        if name not in points:
            raise InputError(f"{path}:{line}: {name} has no entry in {root / LANDMARKS_FILE}")
    return [root / IMAGE_DIR / name for _, name in entries], np.stack([points[name] for _, name in entries])


def labelled_images(
    root: str | os.PathLike[str], exclude_mafl_test: bool, partitions: tuple[str, ...] | None = None
) -> tuple[list[Path], list[int]]:
    """Images of ``identity_CelebA.txt`` (in file order) and their identities as contiguous labels 0..K-1.

    ``partitions`` keeps only those of ``list_eval_partition.txt`` (None: all); ``exclude_mafl_test`` drops
    the MAFL test faces so that identity pretraining never sees them.
    """
    root = Path(root)
    ids = identities(root)
    names = sorted(ids)
    if partitions is not None:
        unknown = [p for p in partitions if p not in PARTITIONS]
        if unknown:
            raise InputError(f"partition {unknown[0]!r} is unknown; expected some of {sorted(PARTITIONS)}")
        part, keep = eval_partition(root), {PARTITIONS[p] for p in partitions}
        missing = [n for n in names if n not in part]
        if missing:
            raise InputError(f"{root / PARTITION_FILE}: {missing[0]} (in {IDENTITY_FILE}) has no partition")
        names = [n for n in names if part[n] in keep]
    if exclude_mafl_test:
        test = set(mafl_split(root, "test"))
        names = [n for n in names if n not in test]
    label = {raw: k for k, raw in enumerate(sorted({ids[n] for n in names}))}
    return [root / IMAGE_DIR / n for n in names], [label[ids[n]] for n in names]


def check(root: str | os.PathLike[str], images: ImageCheck | None = None) -> dict:
    """Verify the layout in place, every listed image readable; return counts. Raises InputError naming
    the first problem."""
    root = Path(root)
    images = images or ImageCheck()
    for relative in (IMAGE_DIR, LANDMARKS_FILE, IDENTITY_FILE, PARTITION_FILE, *MAFL_FILES.values()):
        if not (root / relative).exists():
            raise InputError(f"{root / relative}: missing; expected the CelebA layout {LAYOUT}")
    points, ids, part = landmarks(root), identities(root), eval_partition(root)
    if not points:
        raise InputError(f"{root / LANDMARKS_FILE}: lists no images; expected '<file> x1 y1 ... x5 y5' lines")
    for path, table in ((root / IDENTITY_FILE, ids), (root / PARTITION_FILE, part)):
        missing = sorted(set(points) ^ set(table))
        if missing:
            raise InputError(f"{path}: {missing[0]} is in only one of {path.name} and {LANDMARKS_FILE}; "
                             "expected both to list the same images")  # fmt: skip
    present = set(os.listdir(root / IMAGE_DIR))
    absent = [name for name in sorted(points) if name not in present]
    if absent:
        raise InputError(f"{root / IMAGE_DIR / absent[0]}: missing ({len(absent)} listed images are absent)")
    images.split([root / IMAGE_DIR / name for name in sorted(points)], exif_transpose=False)
    mafl = {split: mafl_split(root, split) for split in MAFL_FILES}
    for split in MAFL_FILES:
        mafl_samples(root, split, points)
    overlap = sorted(set(mafl["train"]) & set(mafl["test"]))
    if overlap:
        raise InputError(f"{root / MAFL_FILES['test']}: {overlap[0]} is also in {MAFL_FILES['train']}")
    return {
        "images": len(points),
        "identities": len(set(ids.values())),
        "partitions": {name: sum(v == code for v in part.values()) for name, code in PARTITIONS.items()},
        "mafl_train": len(mafl["train"]),
        "mafl_test": len(mafl["test"]),
    }


# --------------------------------------------------------------------------------------------------------
# Generated stand-in
# --------------------------------------------------------------------------------------------------------


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
