"""Data faults: a corrupted copy of a tiny generated dataset of each kind, run through the real
``goodtransfer check-dataset`` (and, for truncated images the fast check cannot see, through pretraining).

Each kind is generated once per session into a cache folder and copied per case."""

from __future__ import annotations

import atexit
import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from goodtransfer.data.miniimagenet import image_filename
from goodtransfer.data.synthetic.imagenet import imagenet_wnid
from tests.bad_inputs.common import Case, Outcome, goodtransfer

OPTIONS = {
    "imagefolder": {"num_classes": 2, "train_per_class": 4, "val_per_class": 2, "image_size": 32},
    "voc": {"classes": ["aeroplane", "bicycle"], "trainval_images": 2, "test_images": 2,
            "image_size": [40, 56], "max_objects": 2},
    "coco": {"train_images": 2, "val_images": 2, "image_size": 40, "max_objects": 2, "categories": 2},
    "cityscapes": {"train_images": 2, "val_images": 1, "image_size": [32, 48], "cities": 1, "max_objects": 2},
    "celeba": {"identities": 2, "images_per_identity": 2, "mafl_train": 2, "mafl_test": 1,
               "image_size": [40, 36]},
    "miniimagenet": {"classes_per_split": [2, 1, 1], "images_per_class": 3, "image_size": 32},
}  # fmt: skip
_CACHE: dict[str, Path] = {}
WNID = imagenet_wnid(0)
MINI_IMAGE = image_filename(WNID, 1)
CITY_LABEL = "aachen_000000_000019_gtFine_labelIds.png"


def _generated(kind: str) -> Path:
    if kind not in _CACHE:
        from goodtransfer.data.registry import generate

        if not _CACHE:
            base = Path(tempfile.mkdtemp(prefix="bad-inputs-data-"))
            atexit.register(shutil.rmtree, base, True)
            _CACHE["base"] = base
        generate(kind, _CACHE["base"] / kind, 0, OPTIONS[kind])
        _CACHE[kind] = _CACHE["base"] / kind
    return _CACHE[kind]


def _check(root: Path, kind: str, folder: Path, *extra: str) -> Outcome:
    out = folder / "results" / "datasets" / f"{kind}.json"
    classes = OPTIONS[kind].get("classes")
    outcome = goodtransfer("check-dataset", "--kind", kind, "--root", str(root), "--out", str(out),
                           *(["--classes", *classes] if classes else []), *extra)  # fmt: skip
    outcome.outputs = [out]
    return outcome


def _case(kind: str, corrupt: Callable[[Path], None], *extra: str) -> Callable[[Path], Outcome]:
    """Copy the generated ``kind``, corrupt the copy, run check-dataset on it."""

    def make(folder: Path) -> Outcome:
        root = Path(shutil.copytree(_generated(kind), folder / kind))
        corrupt(root)
        return _check(root, kind, folder, *extra)

    return make


# --------------------------------------------------------------------------------------------------------
# Corruptions
# --------------------------------------------------------------------------------------------------------


def _truncate(path: Path) -> None:
    """Cut a JPEG half-way through its compressed pixels: its header still reads, its pixels do not."""
    data = path.read_bytes()
    start = data.index(b"\xff\xda") if data[:2] == b"\xff\xd8" else len(data) // 2
    path.write_bytes(data[: (start + len(data)) // 2])


def _truncate_png(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: data.index(b"IDAT") + 12])


def _not_an_image(path: Path) -> None:
    path.write_text("<html><body>404 Not Found</body></html>\n")


def _voc_extra(root: Path, edit: Callable[[str, int, int], str]) -> None:
    """Add image id 009999 to trainval: a copy of the first listed image whose XML text ``edit`` changes
    (given the text and the image's width and height)."""
    split = root / "ImageSets" / "Main" / "trainval.txt"
    first = split.read_text().split()[0]
    shutil.copy(root / "JPEGImages" / f"{first}.jpg", root / "JPEGImages" / "009999.jpg")
    text = (root / "Annotations" / f"{first}.xml").read_text()
    with Image.open(root / "JPEGImages" / f"{first}.jpg") as image:
        width, height = image.size
    (root / "Annotations" / "009999.xml").write_text(edit(text, width, height))
    split.write_text(split.read_text() + "009999\n")


def _first_box(box: Callable[[int, int], tuple[int, int, int, int]]) -> Callable[[str, int, int], str]:
    def edit(text: str, width: int, height: int) -> str:
        start, end = text.index("<bndbox>") + len("<bndbox>"), text.index("</bndbox>")
        fields = zip(("xmin", "ymin", "xmax", "ymax"), box(width, height), strict=True)
        return text[:start] + "".join(f"<{f}>{v}</{f}>" for f, v in fields) + text[end:]

    return edit


def _voc_box(box: Callable[[int, int], tuple[int, int, int, int]]) -> Callable[[Path], None]:
    return lambda root: _voc_extra(root, _first_box(box))


def _voc_size(text: str, width: int, height: int) -> str:
    return text.replace(f"<width>{width}</width>", f"<width>{width + 9}</width>", 1)


def _voc_exif(root: Path) -> None:
    """009999 stored width x height but EXIF-rotated by 90 degrees: upright, it no longer fits <size>."""
    _voc_extra(root, lambda text, w, h: text)
    path = root / "JPEGImages" / "009999.jpg"
    with Image.open(path) as image:
        pixels = image.convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6
    pixels.save(path, format="JPEG", exif=exif)


def _voc_empty(root: Path) -> None:
    (root / "ImageSets" / "Main" / "test.txt").write_text("\n")


def _voc_missing(root: Path) -> None:
    split = root / "ImageSets" / "Main" / "test.txt"
    split.write_text(split.read_text() + "008888\n")


def _coco(split: str, edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def corrupt(root: Path) -> None:
        path = root / "annotations" / f"instances_{split}.json"
        data = json.loads(path.read_text())
        edit(data)
        path.write_text(json.dumps(data))

    return corrupt


def _coco_box(change: Callable[[int, int], list[float]]) -> Callable[[dict], None]:
    def edit(data: dict) -> None:
        ann = data["annotations"][0]
        image = next(i for i in data["images"] if i["id"] == ann["image_id"])
        ann["bbox"] = change(image["width"], image["height"])

    return edit


def _coco_widen(data: dict) -> None:
    data["images"][0]["width"] += 5


def _coco_empty(data: dict) -> None:
    data["images"], data["annotations"] = [], []


def _coco_not_an_image(root: Path) -> None:
    _not_an_image(sorted((root / "val2017").glob("*.jpg"))[0])


def _city(corrupt: Callable[[Path], None]) -> Callable[[Path], None]:
    return lambda root: corrupt(next(root.glob(f"gtFine/*/*/{CITY_LABEL}")))


def _shrink(path: Path) -> None:
    with Image.open(path) as label:
        label.crop((0, 0, label.width - 4, label.height)).save(path, format="PNG")


def _celeba_empty(root: Path) -> None:
    path = root / "list_landmarks_align_celeba.txt"
    path.write_text("0\n" + path.read_text().splitlines()[1] + "\n")


def _file(relative: str, corrupt: Callable[[Path], None]) -> Callable[[Path], None]:
    return lambda root: corrupt(root / relative)


# --------------------------------------------------------------------------------------------------------
# Truncated images the fast check does not decode, reached by pretraining
# --------------------------------------------------------------------------------------------------------


def _pretrain_case(kind: str, corrupt: Callable[[Path], None], workers: int = 0) -> Callable[[Path], Outcome]:
    def make(folder: Path) -> Outcome:
        from tests.workflow import pretrain_command, tiny_moco_spec

        root = Path(shutil.copytree(_generated(kind), folder / kind))
        corrupt(root)
        checked = _check(root, kind, folder, "--decode-sample", "0")  # headers only: passes
        if checked.returncode != 0:
            return checked
        out = folder / "pretrain"
        spec = tiny_moco_spec(data_kind=kind, batch_size=4, lr_reference_batch=4, workers=workers)
        done = subprocess.run(pretrain_command(spec, root, out), capture_output=True, text=True, timeout=300)
        return Outcome(done.returncode, done.stdout + done.stderr, [out / "checkpoint.pt", out / "log.json"])

    return make


def _truncate_all(pattern: str) -> Callable[[Path], None]:
    def corrupt(root: Path) -> None:
        for path in sorted(root.glob(pattern)):
            _truncate(path)

    return corrupt


def _unknown_decode_mode(folder: Path) -> Outcome:
    return _check(_generated("imagefolder"), "imagefolder", folder, "--decode", "quick")


_TRUNCATED = ("does not decode", "truncated")
CASES: list[Case] = [
    Case("data-imagefolder-truncated-jpeg", _case(
        "imagefolder", _file(f"train/{WNID}/{WNID}_2.JPEG", _truncate), "--decode", "full"
    ), (f"{WNID}_2.JPEG", *_TRUNCATED)),
    Case("data-imagefolder-not-an-image", _case(
        "imagefolder", _file(f"val/{WNID}/{WNID}_1.JPEG", _not_an_image)
    ), (f"val/{WNID}/{WNID}_1.JPEG", "not a readable image", "expected a JPEG or PNG")),
    Case("data-imagefolder-empty-class-folder", _case(
        "imagefolder", lambda root: [p.unlink() for p in (root / "val" / WNID).iterdir()]
    ), (f"val/{WNID}", "class folder has no images")),
    Case("data-voc-inverted-box", _case("voc", _voc_box(lambda w, h: (30, 4, 12, 20))),
         ("Annotations/009999.xml", "<object>[0]/<bndbox>", "xmax 12 < xmin 30", "expected xmin <= xmax")),
    Case("data-voc-zero-area-box", _case("voc", _voc_box(lambda w, h: (5, 9, 20, 8))),
         ("Annotations/009999.xml", "zero height", "expected ymin <= ymax")),
    Case("data-voc-box-outside-image", _case("voc", _voc_box(lambda w, h: (3, 3, w + 5, h))),
         ("Annotations/009999.xml", "outside the image <size>", "expected 1 <= xmin <= xmax <=")),
    Case("data-voc-size-disagrees-with-image", _case("voc", lambda root: _voc_extra(root, _voc_size)),
         ("Annotations/009999.xml: <size> says", "JPEGImages/009999.jpg is", "expected them to agree")),
    Case("data-voc-exif-rotation-breaks-size", _case("voc", _voc_exif),
         ("Annotations/009999.xml: <size> says", "after its EXIF orientation")),
    Case("data-voc-empty-split", _case("voc", _voc_empty), ("ImageSets/Main/test.txt", "lists no image ids")),
    Case("data-voc-split-lists-missing-image", _case("voc", _voc_missing),
         ("008888", "missing", "ImageSets/Main/test.txt")),
    Case("data-voc-truncated-jpeg", _case(
        "voc", lambda root: _truncate(sorted((root / "JPEGImages").glob("*.jpg"))[-1]), "--decode", "full"
    ), ("JPEGImages/", *_TRUNCATED)),
    Case("data-coco-inverted-box", _case(
        "coco", _coco("train2017", _coco_box(lambda w, h: [4.0, 4.0, 6.0, -2.0]))
    ),
         ("instances_train2017.json", "annotations[0]", "inverted box", "expected [x, y, width >= 0")),
    Case("data-coco-box-outside-image", _case(
        "coco", _coco("val2017", _coco_box(lambda w, h: [w - 3.0, 1.0, 9.0, 4.0]))
    ), ("instances_val2017.json", "annotations[0]", "outside image id", "expected 0 <= x")),
    Case("data-coco-size-disagrees-with-image", _case("coco", _coco("val2017", _coco_widen)),
         ("instances_val2017.json: image id", "width x height says", "expected them to agree")),
    Case("data-coco-empty-split", _case("coco", _coco("val2017", _coco_empty)),
         ("instances_val2017.json", "lists no images")),
    Case("data-coco-not-an-image", _case("coco", _coco_not_an_image),
         ("val2017/", "not a readable image")),
    Case("data-cityscapes-truncated-label", _case(
        "cityscapes", _city(_truncate_png), "--decode", "full"
    ), (CITY_LABEL, "does not decode")),
    Case("data-cityscapes-label-size-disagrees", _case("cityscapes", _city(_shrink)),
         (CITY_LABEL, "the image", "_leftImg8bit.png", "expected them to agree")),
    Case("data-celeba-truncated-image", _case(
        "celeba", _file("img_align_celeba/000003.jpg", _truncate), "--decode", "full"
    ), ("img_align_celeba/000003.jpg", *_TRUNCATED)),
    Case("data-celeba-no-images-listed", _case("celeba", _celeba_empty),
         ("list_landmarks_align_celeba.txt", "lists no images")),
    Case("data-miniimagenet-not-an-image", _case(
        "miniimagenet", _file(f"images/{MINI_IMAGE}", _not_an_image)
    ),
         (f"images/{MINI_IMAGE}", "not a readable image")),
    Case("data-miniimagenet-truncated-image", _case(
        "miniimagenet", _file(f"images/{MINI_IMAGE}", _truncate), "--decode", "full"
    ), (f"images/{MINI_IMAGE}", *_TRUNCATED)),
    Case("data-check-unknown-decode-mode", _unknown_decode_mode, ("--decode", "invalid choice", "'full'")),
    Case("data-imagefolder-truncated-reached-in-pretraining",
         _pretrain_case("imagefolder", _truncate_all("train/*/*.JPEG")),
         ("train/n9", "cannot read the image", "expected a complete JPEG or PNG")),
    Case("data-miniimagenet-truncated-reached-in-pretraining-worker",
         _pretrain_case("miniimagenet", _truncate_all("images/*.jpg"), workers=1),
         (f"images/{WNID}", "cannot read the image")),
]  # fmt: skip
