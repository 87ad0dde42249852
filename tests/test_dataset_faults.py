"""check_dataset finds data faults before any training: unreadable and truncated images, inverted, empty
and outside boxes, <size> that disagrees with the image (after EXIF orientation), empty splits; loaders
name a bad image; the check record says what was decoded and carries a digest of the dataset's files."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image, ImageFile

from goodtransfer.data import coco
from goodtransfer.data.images import ImageCheck, files_digest, open_rgb, sample_positions
from goodtransfer.data.registry import check, generate
from goodtransfer.data.voc import load_split
from goodtransfer.io import InputError

CLASSES = ["aeroplane", "bicycle"]
OPTIONS = {
    "imagefolder": {"num_classes": 2, "train_per_class": 3, "val_per_class": 2, "image_size": 32},
    "voc": {"classes": CLASSES, "trainval_images": 3, "test_images": 2, "image_size": [40, 72],
            "max_objects": 2},
    "coco": {"train_images": 3, "val_images": 2, "image_size": 48, "max_objects": 2, "categories": 2},
}  # fmt: skip


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("generated")
    for kind, options in OPTIONS.items():
        generate(kind, base / kind, 0, options)
    return {kind: base / kind for kind in OPTIONS}


@pytest.fixture
def copy(generated, tmp_path):
    def _copy(kind: str) -> Path:
        return Path(shutil.copytree(generated[kind], tmp_path / kind))

    return _copy


def _truncate(path: Path) -> None:
    """Cut a JPEG half-way through its compressed pixels: the header still reads, the pixels do not."""
    data = path.read_bytes()
    start = data.index(b"\xff\xda")  # start of scan
    path.write_bytes(data[: (start + len(data)) // 2])


def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def _voc_first(root: Path, split: str = "trainval"):
    record = load_split(root, split)[0]
    return record, root / "Annotations" / f"{record.image_id}.xml"


def _box_xml(box: tuple[int, int, int, int]) -> str:
    return "".join(f"<{f}>{v}</{f}>" for f, v in zip(("xmin", "ymin", "xmax", "ymax"), box, strict=True))


def _set_first_box(xml_path: Path, record, box: tuple[int, int, int, int]) -> None:
    text = xml_path.read_text(encoding="utf-8")
    start, end = text.index("<bndbox>") + len("<bndbox>"), text.index("</bndbox>")
    xml_path.write_text(text[:start] + _box_xml(box) + text[end:], encoding="utf-8")


# --------------------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(OPTIONS))
def test_generated_stand_in_passes_both_modes_and_the_record_says_what_was_decoded(generated, kind):
    fast = check(kind, generated[kind], OPTIONS[kind].get("classes"), "fast", 1)
    full = check(kind, generated[kind], OPTIONS[kind].get("classes"), "full")
    images = full["decode"]["headers_read"]
    assert full["decode"] == {"mode": "full", "headers_read": images, "decoded": images}
    assert fast["decode"] == {"mode": "fast", "headers_read": images, "decoded": 2, "sample_per_split": 1}
    assert fast["files_digest"] == full["files_digest"] and len(fast["files_digest"]) == 64


def test_sample_is_spread_over_the_split_and_deterministic():
    assert sample_positions(10, 3) == [0, 4, 9] == sample_positions(10, 3)
    assert sample_positions(2, 5) == [0, 1] and sample_positions(5, 0) == []


def test_truncated_jpeg_fails_the_full_check_naming_it(copy):
    root = copy("imagefolder")
    bad = sorted((root / "train").glob("*/*"))[1]
    _truncate(bad)
    assert check("imagefolder", root, decode="fast", sample=1)["decode"]["decoded"] == 2  # header is fine
    with pytest.raises(InputError, match=rf"{bad}: image does not decode .*truncated"):
        check("imagefolder", root, decode="full")


def test_truncated_jpeg_fails_even_where_truncated_loading_was_switched_on(copy, monkeypatch):
    root = copy("imagefolder")
    _truncate(sorted((root / "val").glob("*/*"))[0])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(InputError, match="does not decode"):
        check("imagefolder", root, decode="full")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored


def test_a_file_that_is_not_an_image_fails_the_fast_check_naming_it(copy):
    root = copy("imagefolder")
    bad = sorted((root / "val").glob("*/*"))[-1]
    bad.write_text("<html>404 Not Found</html>")
    with pytest.raises(InputError, match=rf"{bad}: not a readable image"):
        check("imagefolder", root, decode="fast", sample=0)


def test_a_truncated_image_reached_by_a_loader_names_itself(copy):
    root = copy("imagefolder")
    bad = sorted((root / "train").glob("*/*"))[0]
    _truncate(bad)
    with pytest.raises(InputError, match=rf"{bad}: cannot read the image"):
        open_rgb(bad)


def test_decode_mode_and_sample_are_checked():
    with pytest.raises(InputError, match="decode mode 'quick' is unknown"):
        ImageCheck("quick")
    with pytest.raises(InputError, match="decode sample -1"):
        ImageCheck("fast", -1)


# --------------------------------------------------------------------------------------------------------
# VOC
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("box", "message"),
    [
        (lambda w, h: (20, 5, 10, 15), "xmax 10 < xmin 20 (negative width)"),
        (lambda w, h: (5, 9, 15, 8), "ymax 8 < ymin 9 (zero height)"),
        (lambda w, h: (5, 5, w + 2, 15), "outside the image <size>"),
        (lambda w, h: (-1, 5, 10, 15), "outside the image <size>"),
    ],
    ids=["inverted", "zero-area", "beyond-right", "beyond-left"],
)
def test_voc_bad_box_fails_naming_annotation_object_and_size(copy, box, message):
    root = copy("voc")
    record, xml_path = _voc_first(root)
    _set_first_box(xml_path, record, box(record.width, record.height))
    pattern = rf"{re.escape(str(xml_path))}: <object>\[0\]/<bndbox> \(\w+\) .*{re.escape(message)}"
    with pytest.raises(InputError, match=pattern) as err:
        check("voc", root, CLASSES)
    assert "expected" in str(err.value)


def test_voc_boxes_touching_or_one_pixel_over_the_border_are_kept(copy):
    root = copy("voc")
    record, xml_path = _voc_first(root)
    _set_first_box(xml_path, record, (1, 1, record.width, record.height))
    assert load_split(root, "trainval")[0].objects[0].bbox == (1, 1, record.width, record.height)
    _set_first_box(xml_path, record, (0, 0, record.width + 1, record.height + 1))  # as detectron2 accepts
    _set_first_box(xml_path, record, (7, 7, 7, 7))  # one pixel: 1-based inclusive
    check("voc", root, CLASSES)


def test_voc_size_that_disagrees_with_the_image_fails_naming_both(copy):
    root = copy("voc")
    record, xml_path = _voc_first(root, "test")
    _replace(xml_path, f"<width>{record.width}</width>", f"<width>{record.width + 10}</width>")
    with pytest.raises(
        InputError, match=rf"{xml_path}: <size> says {record.width + 10}x{record.height}"
    ) as err:
        check("voc", root, CLASSES)
    assert f"{record.image_path} is {record.width}x{record.height}" in str(err.value)


def test_voc_empty_split_fails_naming_the_split_file(copy):
    root = copy("voc")
    split = root / "ImageSets" / "Main" / "test.txt"
    split.write_text("\n")
    with pytest.raises(InputError, match=rf"{split}: lists no image ids"):
        check("voc", root, CLASSES)


def test_voc_split_listing_a_missing_image_fails_naming_image_and_split(copy):
    root = copy("voc")
    split = root / "ImageSets" / "Main" / "trainval.txt"
    split.write_text(split.read_text() + "009999\n")
    with pytest.raises(InputError, match=rf"009999.xml: missing; .*\(id 009999 is in {split}\)"):
        check("voc", root, CLASSES)


def _exif_rotated(path: Path, stored: tuple[int, int]) -> None:
    """A JPEG stored ``stored`` (width, height) that viewers rotate 90 degrees (EXIF orientation 6)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", stored, (90, 120, 30)).save(path, format="JPEG", exif=exif)


def _non_square(root: Path):
    records = load_split(root, "trainval") + load_split(root, "test")
    return next(r for r in records if r.width != r.height)


def test_voc_exif_rotated_image_is_transposed_by_loader_and_check(copy):
    from goodtransfer.transfer.voc_detection import VocDetectionData

    root = copy("voc")
    record = _non_square(root)
    _exif_rotated(record.image_path, (record.height, record.width))  # upright it is <size>
    check("voc", root, CLASSES, "full")
    data = VocDetectionData([record], CLASSES)
    image, _, _ = data[0, False]
    assert tuple(image.shape[1:]) == (record.height, record.width)


def test_voc_exif_rotation_that_breaks_size_fails_in_check_and_loader(copy):
    from goodtransfer.transfer.voc_detection import VocDetectionData

    root = copy("voc")
    record = _non_square(root)
    _exif_rotated(record.image_path, (record.width, record.height))  # upright it is height x width
    xml_path = root / "Annotations" / f"{record.image_id}.xml"
    with pytest.raises(InputError, match=rf"{xml_path}: <size> says .* after its EXIF orientation"):
        check("voc", root, CLASSES)
    with pytest.raises(InputError, match=rf"{xml_path}: <size> is .* after its EXIF orientation"):
        VocDetectionData([record], CLASSES)[0, False]


# --------------------------------------------------------------------------------------------------------
# COCO
# --------------------------------------------------------------------------------------------------------


def _coco_edit(root: Path, split: str, edit) -> Path:
    path = coco.annotation_path(root, split)
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    return path


def _first_box(data: dict, change) -> None:
    ann = data["annotations"][0]
    image = next(i for i in data["images"] if i["id"] == ann["image_id"])
    ann["bbox"] = change(image["width"], image["height"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda w, h: [10.0, 10.0, -4.0, 5.0], r"negative width or height \(an inverted box\)"),
        (lambda w, h: [w - 5.0, 2.0, 8.0, 5.0], r"outside image id \d+"),
        (lambda w, h: [2.0, -3.0, 8.0, 5.0], r"outside image id \d+"),
    ],
    ids=["inverted", "beyond-right", "beyond-top"],
)
def test_coco_bad_box_fails_naming_json_and_annotation(copy, change, message):
    root = copy("coco")
    path = _coco_edit(root, "train2017", lambda data: _first_box(data, change))
    with pytest.raises(InputError, match=rf"{path}: annotations\[0\] \(id \d+\): bbox .*{message}"):
        check("coco", root)
    with pytest.raises(InputError, match=message):  # the training loader reads the same json
        coco.load_split(root, "train2017", training=True)


def test_coco_zero_height_box_as_in_real_train2017_is_kept_and_dropped_by_the_loader(copy):
    root = copy("coco")
    _coco_edit(root, "train2017", lambda data: _first_box(data, lambda w, h: [9.98, 18.56, 5.54, 0.0]))
    check("coco", root)
    split = coco.load_split(root, "train2017", training=False)
    assert all(o.box[3] > o.box[1] for r in split.records for o in r.objects)


def test_coco_image_size_that_disagrees_with_the_file_fails_naming_json_and_image(copy):
    root = copy("coco")

    def widen(data):
        data["images"][0]["width"] += 7

    path = _coco_edit(root, "val2017", widen)
    with pytest.raises(InputError, match=rf"{path}: image id \d+ \(\d+\.jpg\) width x height says"):
        check("coco", root)


def test_coco_split_without_images_fails_naming_the_json(copy):
    root = copy("coco")

    def empty(data):
        data["images"], data["annotations"] = [], []

    path = _coco_edit(root, "val2017", empty)
    with pytest.raises(InputError, match=rf"{path}: lists no images"):
        check("coco", root)


# --------------------------------------------------------------------------------------------------------
# The files digest
# --------------------------------------------------------------------------------------------------------


def test_files_digest_follows_links_and_changes_with_any_file(generated, tmp_path):
    source = generated["imagefolder"]
    linked = tmp_path / "linked"
    for path in sorted(source.rglob("*")):
        if path.is_file():
            (linked / path.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
            (linked / path.relative_to(source)).symlink_to(path)
    assert files_digest(linked) == files_digest(source)
    copied = Path(shutil.copytree(source, tmp_path / "copied"))
    before = files_digest(copied)["sha256"]
    (copied / "val" / "extra.txt").write_text("x")
    assert files_digest(copied)["sha256"] != before


def test_config_schema_takes_a_decode_mode_per_dataset():
    import jsonschema

    from goodtransfer.io import read_yaml
    from tests.workflow import ROOT

    schema = read_yaml(ROOT / "src/goodtransfer/config.schema.yaml")["properties"]["datasets"]
    entry = {"kind": "voc", "root": "data/voc", "generate": False}
    jsonschema.validate({"voc": {**entry, "check": {"decode": "full", "sample": 4}}}, schema)
    with pytest.raises(jsonschema.ValidationError, match="'quick' is not one of"):
        jsonschema.validate({"voc": {**entry, "check": {"decode": "quick"}}}, schema)
