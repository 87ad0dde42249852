"""COCO 2017 instances: read ``annotations/instances_<split>.json`` as detectron2 does, write a stand-in.

Loading follows detectron2's ``load_coco_json`` and its dataset mapper: category ids become contiguous
indices in sorted id order; polygons with fewer than 3 points are dropped and an instance left without a
valid polygon is dropped; boxes ``[x, y, w, h]`` become ``(x0, y0, x1, y1)`` clipped to the image, and
empty ones (side <= 1e-5) are dropped. For training, crowd annotations are skipped and images without a
non-crowd annotation are dropped (``filter_empty_annotations``). One addition: an ``iscrowd 0`` annotation
stored as RLE (COCO uses polygons for those; detectron2's polygon format would fail) is traced to polygons.

``mask_to_polygons`` traces a mask's pixel edges into polygons that pycocotools rasterises back to it
exactly; the generated stand-in (``goodtransfer.data.synthetic.coco``) writes its masks with it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_util

from goodtransfer.data.images import ImageCheck
from goodtransfer.io import InputError, read_json

LAYOUT = "<root>/annotations/instances_{train2017,val2017}.json and <root>/{train2017,val2017}/<file_name>"
SPLITS = ("train2017", "val2017")
TRAIN_SPLIT = SPLITS[0]  # the split models train on
MIN_BOX_SIDE = 1e-5  # detectron2's filter_empty_instances threshold

# fmt: off
_NAMES_BY_ID = (  # COCO ids 1..90; "" marks the ten ids COCO leaves unused
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "", "backpack", "umbrella", "", "", "handbag", "tie", "suitcase",
    "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard",
    "surfboard", "tennis racket", "bottle", "", "wine glass", "cup", "fork", "knife", "spoon", "bowl",
    "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake",
    "chair", "couch", "potted plant", "bed", "", "dining table", "", "", "toilet", "", "tv", "laptop",
    "mouse", "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "",
    "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)
SUPERCATEGORIES = ((1, "person"), (2, "vehicle"), (10, "outdoor"), (16, "animal"), (27, "accessory"),
                    (34, "sports"), (44, "kitchen"), (52, "food"), (62, "furniture"), (72, "electronic"),
                    (78, "appliance"), (84, "indoor"))
# fmt: on
COCO_CATEGORIES: tuple[tuple[int, str], ...] = tuple((i, n) for i, n in enumerate(_NAMES_BY_ID, start=1) if n)


@dataclass(frozen=True)
class CocoObject:
    category: int  # contiguous index 0..K-1
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels, clipped to the image
    polygons: tuple[np.ndarray, ...]  # flat [x0, y0, x1, y1, ...] float64 arrays, >= 3 points each


@dataclass(frozen=True)
class CocoRecord:
    image_id: int
    image_path: Path
    width: int
    height: int
    objects: tuple[CocoObject, ...]


@dataclass(frozen=True)
class CocoSplit:
    json_path: Path
    category_ids: tuple[int, ...]  # contiguous index -> COCO category id
    category_names: tuple[str, ...]
    records: list[CocoRecord]


def annotation_path(root: str | Path, split: str) -> Path:
    return Path(root) / "annotations" / f"instances_{split}.json"


def read_instances(root: str | Path, split: str) -> tuple[Path, dict[str, Any]]:
    """The split's instances json, checked: fields present, ids unique, every reference resolvable."""
    path = annotation_path(root, split)
    if not path.is_file():
        raise InputError(f"{path}: annotation file not found; expected {LAYOUT}")
    data = read_json(path)
    if not isinstance(data, dict):
        raise InputError(f"{path}: top level is {type(data).__name__}; expected a COCO instances dict")
    fields = {"images": ("id", "file_name", "height", "width"), "categories": ("id", "name"),
              "annotations": ("id", "image_id", "category_id", "bbox", "segmentation")}  # fmt: skip
    for key, needed in fields.items():
        if not isinstance(data.get(key), list):
            raise InputError(f"{path}: field {key!r} is missing or not a list; expected {LAYOUT}")
        for k, item in enumerate(data[key]):
            missing = [f for f in needed if not isinstance(item, dict) or f not in item]
            if missing:
                raise InputError(f"{path}: {key}[{k}] lacks field(s) {missing}; expected {list(needed)}")
    for key in ("images", "categories"):
        ids = [item["id"] for item in data[key]]
        if len(set(ids)) != len(ids):
            raise InputError(f"{path}: {key} repeat an id; expected unique ids")
    for k, image in enumerate(data["images"]):
        w, h = image["width"], image["height"]
        if not all(isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in (w, h)):
            raise InputError(f"{path}: images[{k}] (id {image['id']}) has width {w!r}, height {h!r}; "
                             "expected positive integers")  # fmt: skip
    images, categories = {i["id"]: i for i in data["images"]}, {c["id"] for c in data["categories"]}
    for k, ann in enumerate(data["annotations"]):
        for field, known, kind in (("image_id", images, "images"), ("category_id", categories, "categories")):
            if ann[field] not in known:
                raise InputError(
                    f"{path}: annotations[{k}] (id {ann['id']}) has {field} {ann[field]!r}, not in {kind}"
                )
        box = ann["bbox"]
        if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, int | float) for v in box)):
            raise InputError(f"{path}: annotations[{k}].bbox is {ann['bbox']!r}; expected [x, y, w, h]")
        _check_box(box, images[ann["image_id"]], f"{path}: annotations[{k}] (id {ann['id']})")
    return path, data


def _check_box(box: list[float], image: dict[str, Any], where: str) -> None:
    """Reject only what is certainly wrong: a negative side, or a box more than 1 px outside its image.

    A zero side is kept: COCO train2017 has two such boxes (annotation ids 918 and 2206849); the loader drops
    them as detectron2 does. Tiny boxes, crowd regions and boxes touching the border are real data too."""
    x, y, bw, bh = box
    if bw < 0 or bh < 0:
        raise InputError(f"{where}: bbox {box} has a negative width or height (an inverted box); "
                         "expected [x, y, width >= 0, height >= 0]")  # fmt: skip
    w, h = image["width"], image["height"]
    if x < -1 or y < -1 or x + bw > w + 1 or y + bh > h + 1:
        raise InputError(
            f"{where}: bbox {box} reaches ({x + bw:g}, {y + bh:g}), outside image id {image['id']} "
            f"({image['file_name']}, {w}x{h}); expected 0 <= x, x + width <= {w}, 0 <= y, y + height <= {h}"
        )


def load_split(root: str | Path, split: str, *, training: bool) -> CocoSplit:
    """Images sorted by id with their non-crowd objects; ``training`` drops images with none."""
    path, data = read_instances(root, split)
    categories = sorted(data["categories"], key=lambda c: c["id"])
    index = {c["id"]: k for k, c in enumerate(categories)}
    by_image: dict[Any, list[dict]] = defaultdict(list)
    for ann in data["annotations"]:
        if not ann.get("iscrowd", 0):
            by_image[ann["image_id"]].append(ann)
    records = []
    for image in sorted(data["images"], key=lambda i: i["id"]):
        h, w = int(image["height"]), int(image["width"])
        annotations = by_image[image["id"]]
        valid = [
            (a, _polygons(a["segmentation"], h, w, f"{path}: annotation {a['id']}")) for a in annotations
        ]
        valid = [(a, polys) for a, polys in valid if polys]
        if training and not valid:
            continue
        objects = tuple(
            CocoObject(index[a["category_id"]], box, polys)
            for a, polys in valid
            if (box := _clipped_box(a["bbox"], w, h)) is not None
        )
        image_path = Path(root) / split / image["file_name"]
        if not image_path.is_file():
            raise InputError(f"{image_path}: image file not found (listed in {path}); expected {LAYOUT}")
        records.append(CocoRecord(image["id"], image_path, w, h, objects))
    if not records:
        usable = "with a non-crowd annotation " if training else ""
        raise InputError(f"{path}: lists no images {usable}for split {split}; expected {LAYOUT}")
    ids, names = tuple(c["id"] for c in categories), tuple(c["name"] for c in categories)
    return CocoSplit(path, ids, names, records)


def image_paths(root: str | Path, split: str = TRAIN_SPLIT) -> list[Path]:
    """Every image the split's instances json lists, annotated or not, sorted by image id."""
    path, data = read_instances(root, split)
    if not (paths := _listed_images(root, split, path, data)):
        raise InputError(f"{path}: lists no images; expected {LAYOUT}")
    return paths


def _listed_images(root: str | Path, split: str, path: Path, data: dict[str, Any]) -> list[Path]:
    paths = [
        Path(root) / split / image["file_name"] for image in sorted(data["images"], key=lambda i: i["id"])
    ]
    for image_path in paths:
        if not image_path.is_file():
            raise InputError(f"{image_path}: image file not found (listed in {path}); expected {LAYOUT}")
    return paths


def _polygons(segmentation: Any, h: int, w: int, where: str) -> tuple[np.ndarray, ...]:
    if isinstance(segmentation, dict) and {"counts", "size"} <= segmentation.keys():
        rle = segmentation
        if list(rle["size"]) != [h, w]:
            raise InputError(f"{where}: RLE size is {rle['size']}; expected the image's [{h}, {w}]")
        if isinstance(rle["counts"], list):
            rle = mask_util.frPyObjects(rle, *rle["size"])
        return tuple(np.asarray(p, dtype=np.float64) for p in mask_to_polygons(mask_util.decode(rle)))
    if not isinstance(segmentation, list):
        raise InputError(f"{where}: segmentation is {segmentation!r:.60}; expected polygons or RLE")
    try:
        arrays = [np.asarray(p, dtype=np.float64) for p in segmentation]
    except (TypeError, ValueError):
        raise InputError(
            f"{where}: segmentation holds non-numeric polygons; expected lists of x, y"
        ) from None
    return tuple(p for p in arrays if p.ndim == 1 and p.size >= 6 and p.size % 2 == 0)


def _clipped_box(bbox: Sequence[float], w: int, h: int) -> tuple[float, float, float, float] | None:
    x, y, bw, bh = (float(v) for v in bbox)
    x0, y0 = min(max(x, 0.0), w), min(max(y, 0.0), h)
    x1, y1 = min(max(x + bw, 0.0), w), min(max(y + bh, 0.0), h)
    return (x0, y0, x1, y1) if x1 - x0 > MIN_BOX_SIDE and y1 - y0 > MIN_BOX_SIDE else None


def check(root: str | Path, images: ImageCheck | None = None) -> dict[str, Any]:
    """Counts per split after checking both json files (boxes inside their images) and every listed image:
    present, readable, of the stated size (after EXIF orientation, as the loader sees it)."""
    images = images or ImageCheck()
    summary: dict[str, Any] = {}
    for split in SPLITS:
        path, data = read_instances(root, split)
        if not data["images"]:
            raise InputError(f"{path}: lists no images; expected {LAYOUT}")
        listed = sorted(data["images"], key=lambda i: i["id"])
        images.split(
            _listed_images(root, split, path, data),
            [(i["width"], i["height"]) for i in listed],
            [f"{path}: image id {i['id']} ({i['file_name']}) width x height" for i in listed],
        )
        crowd = sum(bool(a.get("iscrowd", 0)) for a in data["annotations"])
        summary[split] = {"images": len(data["images"]), "annotations": len(data["annotations"]),
                          "crowd": crowd, "categories": len(data["categories"])}  # fmt: skip
    return summary


# --------------------------------------------------------------------------------------------------------
# Mask -> polygons along pixel edges (pixel (r, c) covers [c, c+1] x [r, r+1], as in pycocotools)
# --------------------------------------------------------------------------------------------------------

Corner = tuple[int, int]
# Per pixel side: the neighbour it faces, then the edge's start and end corner offsets (object on the right).
_SIDES = (
    ((-1, 0), (0, 0), (1, 0)),
    ((0, 1), (1, 0), (1, 1)),
    ((1, 0), (1, 1), (0, 1)),
    ((0, -1), (0, 1), (0, 0)),
)


def _boundary_edges(mask: np.ndarray) -> dict[Corner, list[Corner]]:
    padded = np.pad(mask.astype(bool), 1)
    inner, (ph, pw) = padded[1:-1, 1:-1], padded.shape
    edges: dict[Corner, list[Corner]] = defaultdict(list)
    for (dr, dc), (sx, sy), (ex, ey) in _SIDES:
        rows, cols = np.nonzero(inner & ~padded[1 + dr : ph - 1 + dr, 1 + dc : pw - 1 + dc])
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            edges[(c + sx, r + sy)].append((c + ex, r + ey))
    return edges


def _loops(mask: np.ndarray) -> list[np.ndarray]:
    """Closed boundary loops as (N, 2) corner arrays: outlines clockwise on screen, holes anticlockwise."""
    edges = _boundary_edges(mask)
    seen: set[tuple[Corner, Corner]] = set()
    loops = []
    for start, ends in edges.items():
        for end in ends:
            edge, points = (start, end), []
            while edge not in seen:
                seen.add(edge)
                points.append(edge[0])
                (ax, ay), b = edge
                # Where two pixels touch only at a corner, turning right keeps them apart.
                right = (b[0] - (b[1] - ay), b[1] + (b[0] - ax))
                edge = (b, edges[b][0] if len(edges[b]) == 1 else right)
            if points:
                loop = np.asarray(points, dtype=np.float64)
                turns = np.any((loop - np.roll(loop, 1, 0)) != (np.roll(loop, -1, 0) - loop), axis=1)
                loops.append(loop[turns])
    return loops


def _signed_area(loop: np.ndarray) -> float:
    x, y = loop[:, 0], loop[:, 1]
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def _contains(loop: np.ndarray, point: np.ndarray) -> bool:
    x, y = loop[:, 0], loop[:, 1]
    xn, yn = np.roll(x, -1), np.roll(y, -1)
    crossing = (y > point[1]) != (yn > point[1])
    with np.errstate(divide="ignore", invalid="ignore"):
        at = x + (point[1] - y) * (xn - x) / (yn - y)
    return bool(np.count_nonzero(crossing & (point[0] < at)) % 2)


def mask_to_polygons(mask: np.ndarray) -> list[list[float]]:
    """COCO polygons (flat x, y lists) that pycocotools rasterises back to ``mask`` exactly."""
    loops = _loops(mask)
    areas = [_signed_area(loop) for loop in loops]
    outlines = [k for k, area in enumerate(areas) if area > 0]
    pieces = {k: [loops[k]] for k in outlines}
    for k, area in enumerate(areas):
        if area >= 0:
            continue
        hole = loops[k]
        step = np.sign(hole[1] - hole[0])
        probe = hole[0] + 0.5 * step + 0.5 * np.array([step[1], -step[0]])  # a pixel inside the hole
        parent = min((j for j in outlines if _contains(loops[j], probe)), key=lambda j: areas[j])
        # outline start -> hole -> back to the outline start: the bridge is drawn twice and cancels
        pieces[parent] += [loops[parent][:1], hole, hole[:1]]
    return [np.concatenate(pieces[k]).ravel().tolist() for k in outlines]
