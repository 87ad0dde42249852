"""PASCAL VOC2007 layout: read and write ``Annotations/``, ``ImageSets/Main/`` and locate ``JPEGImages/``.

Coordinate conventions
----------------------
* XML boxes (``VocObject.bbox``) are integers exactly as in the annotation files: 1-based, inclusive
  pixel indices, so a box covering a whole W x H image is ``(1, 1, W, H)``.
* Model boxes are 0-based continuous coordinates. ``to_model_box`` follows detectron2's VOC loader and
  subtracts 1 from xmin and ymin only, so the whole image becomes ``(0, 0, W, H)``.
* ``to_voc_box`` is the inverse used when exporting detections for evaluation (detectron2 adds 1 to
  xmin and ymin before writing its per-class result files).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from goodtransfer.io import InputError, write_text

# Order matters: class indices are positions in this tuple, matching detectron2's CLASS_NAMES.
VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person",
    "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip

_BOX_FIELDS = ("xmin", "ymin", "xmax", "ymax")


@dataclass(frozen=True)
class VocObject:
    name: str
    bbox: tuple[int, int, int, int]  # xmin, ymin, xmax, ymax exactly as in the XML (1-based inclusive pixels)
    difficult: bool = False
    truncated: bool = False


@dataclass(frozen=True)
class VocRecord:
    image_id: str
    image_path: Path
    width: int
    height: int
    objects: tuple[VocObject, ...]


def to_model_box(bbox: Sequence[float]) -> tuple[float, float, float, float]:
    """XML box (1-based inclusive) -> 0-based continuous model box, as detectron2's VOC loader does."""
    return (float(bbox[0]) - 1.0, float(bbox[1]) - 1.0, float(bbox[2]), float(bbox[3]))


def to_voc_box(box: Sequence[Any]) -> tuple[float, float, float, float]:
    """Model box -> VOC evaluation box: the inverse of ``to_model_box``.

    The +1 is applied in the box's own dtype before converting, because detectron2 adds it to float32
    numpy scalars; doing it in float64 could flip a later rounding to one decimal.
    """
    return (float(box[0] + 1), float(box[1] + 1), float(box[2]), float(box[3]))


def _layout_hint(root: Path) -> str:
    return (
        "expected a PASCAL VOC layout with JPEGImages/, Annotations/, "
        f"ImageSets/Main/<split>.txt under {root}"
    )


def _read_split_ids(root: Path, split: str) -> list[str]:
    split_path = root / "ImageSets" / "Main" / f"{split}.txt"
    if not split_path.is_file():
        raise InputError(f"{split_path}: missing; {_layout_hint(root)}")
    ids = [line.strip() for line in split_path.read_text(encoding="utf-8").splitlines()]
    ids = [image_id for image_id in ids if image_id]
    seen: set[str] = set()
    for image_id in ids:
        # A path separator would let an id escape the dataset folder.
        if "/" in image_id or "\\" in image_id or image_id in (".", ".."):
            raise InputError(f"{split_path}: image id {image_id!r} is not a plain file stem")
        # detectron2 would count the ground truth of a repeated id twice in npos.
        if image_id in seen:
            raise InputError(f"{split_path}: image id {image_id!r} is listed more than once")
        seen.add(image_id)
    return ids


def _text(elem: ET.Element, tag: str, where: str, xml_path: Path) -> str:
    child = elem.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise InputError(f"{xml_path}: {where}<{tag}> is missing or empty")
    return child.text


def _int(elem: ET.Element, tag: str, where: str, xml_path: Path, default: int | None = None) -> int:
    if default is not None and not (elem.findtext(tag) or "").strip():
        return default
    text = _text(elem, tag, where, xml_path)
    try:
        return int(text.strip())
    except ValueError:
        raise InputError(f"{xml_path}: {where}<{tag}> is {text!r}; expected an integer") from None


def _check_box(box: tuple[int, int, int, int], size: tuple[int, int], where: str, xml_path: Path) -> None:
    """Reject only boxes that are certainly wrong: empty or inverted, or more than 1 px outside ``<size>``.

    Inclusive 1-based pixels: xmax == xmin is a 1 px wide box and the image spans 1..W. Boxes touching
    the border (and 0 or W+1, one pixel beyond) are kept: detectron2 and the VOC devkit accept them."""
    xmin, ymin, xmax, ymax = box
    width, height = size
    for low, high, axis in ((xmin, xmax, "x"), (ymin, ymax, "y")):
        if high < low:
            extent = "zero" if high == low - 1 else "negative"
            side = "width" if axis == "x" else "height"
            raise InputError(
                f"{xml_path}: {where} has {axis}max {high} < {axis}min {low} ({extent} {side}); "
                f"expected {axis}min <= {axis}max (1-based, inclusive pixels)"
            )
    if xmin < 0 or ymin < 0 or xmax > width + 1 or ymax > height + 1:
        raise InputError(
            f"{xml_path}: {where} is ({xmin}, {ymin}, {xmax}, {ymax}), outside the image <size> "
            f"{width}x{height}; expected 1 <= xmin <= xmax <= {width} and 1 <= ymin <= ymax <= {height}"
        )


def _parse_object(
    obj: ET.Element, index: int, xml_path: Path, classes: Sequence[str] | None, size: tuple[int, int]
) -> VocObject:
    where = f"<object>[{index}]/"
    name = _text(obj, "name", where, xml_path)
    if classes is not None and name not in classes:
        raise InputError(f"{xml_path}: {where}<name> is {name!r}; expected one of {', '.join(classes)}")
    bndbox = obj.find("bndbox")
    if bndbox is None:
        raise InputError(f"{xml_path}: {where}<bndbox> is missing")
    xmin, ymin, xmax, ymax = (_int(bndbox, field, f"{where}<bndbox>/", xml_path) for field in _BOX_FIELDS)
    _check_box((xmin, ymin, xmax, ymax), size, f"{where}<bndbox> ({name})", xml_path)
    # Missing flags mean 0: real VOC2007 always has them, hand-made annotations often do not.
    difficult = _int(obj, "difficult", where, xml_path, default=0)
    truncated = _int(obj, "truncated", where, xml_path, default=0)
    return VocObject(name, (xmin, ymin, xmax, ymax), bool(difficult), bool(truncated))


def parse_annotation(
    xml_path: str | Path, image_id: str, image_path: Path, classes: Sequence[str] | None = None
) -> VocRecord:
    """Parse one VOC annotation file into a ``VocRecord``."""
    xml_path = Path(xml_path)
    try:
        tree = ET.parse(xml_path)
    except ET.ParseError as err:
        raise InputError(f"{xml_path}: not well-formed XML ({err})") from None
    size = tree.getroot().find("size")
    if size is None:
        raise InputError(f"{xml_path}: <size> is missing")
    width = _int(size, "width", "<size>/", xml_path)
    height = _int(size, "height", "<size>/", xml_path)
    if width <= 0 or height <= 0:
        raise InputError(f"{xml_path}: <size> is {width}x{height}; expected positive width and height")
    objects = tuple(
        _parse_object(obj, i, xml_path, classes, (width, height))
        for i, obj in enumerate(tree.getroot().findall("object"))
    )
    return VocRecord(image_id, image_path, width, height, objects)


def load_split(root: str | Path, split: str, classes: Sequence[str] | None = None) -> list[VocRecord]:
    """Read ``ImageSets/Main/{split}.txt`` under a VOC year folder and parse every listed annotation."""
    root = Path(root)
    split_path = root / "ImageSets" / "Main" / f"{split}.txt"
    records = []
    for image_id in _read_split_ids(root, split):
        xml_path = root / "Annotations" / f"{image_id}.xml"
        image_path = root / "JPEGImages" / f"{image_id}.jpg"
        for needed in (xml_path, image_path):
            if not needed.is_file():
                raise InputError(
                    f"{needed}: missing; {_layout_hint(root)} (id {image_id} is in {split_path})"
                )
        records.append(parse_annotation(xml_path, image_id, image_path, classes))
    if not records:
        raise InputError(f"{split_path}: lists no image ids; expected one image id per line")
    return records


def _sub(parent: ET.Element, tag: str, text: str) -> ET.Element:
    child = ET.SubElement(parent, tag)
    child.text = text
    return child


def annotation_xml(record: VocRecord) -> str:
    """Render a record as VOC-style XML text (the inverse of ``parse_annotation``)."""
    root = ET.Element("annotation")
    _sub(root, "folder", record.image_path.parent.parent.name)
    _sub(root, "filename", record.image_path.name)
    size = ET.SubElement(root, "size")
    _sub(size, "width", str(record.width))
    _sub(size, "height", str(record.height))
    _sub(size, "depth", "3")
    for obj in record.objects:
        node = ET.SubElement(root, "object")
        _sub(node, "name", obj.name)
        _sub(node, "pose", "Unspecified")
        _sub(node, "truncated", str(int(obj.truncated)))
        _sub(node, "difficult", str(int(obj.difficult)))
        bndbox = ET.SubElement(node, "bndbox")
        for field, value in zip(_BOX_FIELDS, obj.bbox, strict=True):
            _sub(bndbox, field, str(int(value)))
    ET.indent(root, space="\t")
    return ET.tostring(root, encoding="unicode") + "\n"


def write_annotation(path: str | Path, record: VocRecord) -> None:
    """Write ``record`` as a VOC annotation XML file, atomically."""
    write_text(path, annotation_xml(record))


def write_split(root: str | Path, split: str, image_ids: Sequence[str]) -> None:
    """Write ``ImageSets/Main/{split}.txt`` (one image id per line), atomically."""
    write_text(Path(root) / "ImageSets" / "Main" / f"{split}.txt", "".join(f"{i}\n" for i in image_ids))
