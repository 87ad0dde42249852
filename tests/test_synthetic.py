"""Generated ImageNet-style and VOC2007-style datasets: layout, determinism, annotation sanity, structure."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from goodtransfer.cli import main
from goodtransfer.data.synthetic import voc as synthetic_voc
from goodtransfer.data.synthetic.common import Placement, Scene
from goodtransfer.data.synthetic.imagenet import generate_imagenet, imagenet_wnid
from goodtransfer.data.synthetic.kinds import KINDS, PATTERNS
from goodtransfer.data.synthetic.voc import generate_voc
from goodtransfer.data.voc import VocRecord, load_split
from goodtransfer.io import InputError

VOC_TEST_CLASSES = ("aeroplane", "bicycle", "bird")
IMAGENET_ARGS: dict[str, Any] = {
    "num_classes": 3,
    "train_per_class": 4,
    "val_per_class": 2,
    "image_size": 32,
    "seed": 0,
}
VOC_ARGS: dict[str, Any] = {
    "classes": VOC_TEST_CLASSES,
    "trainval_images": 24,
    "test_images": 16,
    "image_size": (64, 96),
    "max_objects": 5,
    "seed": 0,
}


def tree_digest(root: Path) -> str:
    """Hash of every relative path and file content under ``root``."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("imagenet") / "data"
    generate_imagenet(root, **IMAGENET_ARGS)
    return root


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("voc") / "VOC2007"
    generate_voc(root, **VOC_ARGS)
    return root


@pytest.fixture(scope="module")
def voc_records(voc_root: Path) -> dict[str, list[VocRecord]]:
    return {split: load_split(voc_root, split, VOC_TEST_CLASSES) for split in ("trainval", "test")}


def load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "RGB"
        return np.asarray(image, dtype=np.float64)


def neighbour_correlation(pixels: np.ndarray) -> float:
    """Correlation of horizontally adjacent pixels over all channels (each centred on its own mean).

    Colour channels, not grey, because an object can differ from its background in hue only."""
    centred = pixels - pixels.mean(axis=(0, 1))
    return float(np.corrcoef(centred[:, :-1].ravel(), centred[:, 1:].ravel())[0, 1])


# ------------------------------------------------------------ determinism


@pytest.mark.parametrize(
    ("generate", "args"),
    [(generate_imagenet, IMAGENET_ARGS), (generate_voc, VOC_ARGS)],
    ids=["imagenet", "voc"],
)
def test_same_seed_same_bytes_other_seed_differs(
    tmp_path: Path, generate: Callable[..., None], args: dict[str, Any]
) -> None:
    generate(tmp_path / "a", **args)
    generate(tmp_path / "b", **args)
    generate(tmp_path / "c", **{**args, "seed": args["seed"] + 1})
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")
    assert tree_digest(tmp_path / "a") != tree_digest(tmp_path / "c")


# ------------------------------------------------------------ ImageNet


def test_imagenet_layout(imagenet_root: Path) -> None:
    wnids = [imagenet_wnid(i) for i in range(IMAGENET_ARGS["num_classes"])]
    assert all(re.fullmatch(r"n\d{8}", wnid) for wnid in wnids)
    for split, per_class in (
        ("train", IMAGENET_ARGS["train_per_class"]),
        ("val", IMAGENET_ARGS["val_per_class"]),
    ):
        assert sorted(p.name for p in (imagenet_root / split).iterdir()) == wnids
        for wnid in wnids:
            files = sorted((imagenet_root / split / wnid).iterdir())
            assert len(files) == per_class
            for path in files:
                assert re.fullmatch(rf"{wnid}_\d+\.JPEG", path.name)
                assert load_rgb(path).shape == (IMAGENET_ARGS["image_size"], IMAGENET_ARGS["image_size"], 3)
    lines = (imagenet_root / "classes.txt").read_text(encoding="utf-8").splitlines()
    assert [line.split(" ", 1)[0] for line in lines] == wnids
    assert all(len(line.split(" ", 1)[1]) > 0 for line in lines)
    assert not list(imagenet_root.parent.glob(".*")), "temporary build directories were left behind"


def test_imagenet_images_are_structured_not_noise(imagenet_root: Path) -> None:
    paths = sorted(imagenet_root.rglob("*.JPEG"))
    correlations = [neighbour_correlation(load_rgb(path)) for path in paths]
    noise = np.random.default_rng(0).uniform(0, 255, size=(32, 32, 3))
    assert neighbour_correlation(noise) < 0.2
    assert np.mean(correlations) > 0.75
    assert min(correlations) > 0.4


# ------------------------------------------------------------ VOC


def test_voc_layout_and_splits(voc_root: Path, voc_records: dict[str, list[VocRecord]]) -> None:
    trainval = [r.image_id for r in voc_records["trainval"]]
    test = [r.image_id for r in voc_records["test"]]
    assert len(trainval) == VOC_ARGS["trainval_images"] and len(test) == VOC_ARGS["test_images"]
    assert not set(trainval) & set(test)
    assert all(re.fullmatch(r"\d{6}", image_id) for image_id in trainval + test)
    assert len(list((voc_root / "JPEGImages").glob("*.jpg"))) == len(trainval) + len(test)
    assert len(list((voc_root / "Annotations").glob("*.xml"))) == len(trainval) + len(test)


def test_voc_boxes_inside_images(voc_records: dict[str, list[VocRecord]]) -> None:
    low, high = VOC_ARGS["image_size"]
    for record in voc_records["trainval"] + voc_records["test"]:
        pixels = load_rgb(record.image_path)
        assert pixels.shape == (record.height, record.width, 3)
        assert low <= record.width <= high and low <= record.height <= high
        assert 1 <= len(record.objects) <= VOC_ARGS["max_objects"]
        for obj in record.objects:
            xmin, ymin, xmax, ymax = obj.bbox
            assert 1 <= xmin < xmax <= record.width and 1 <= ymin < ymax <= record.height, obj
            if obj.truncated:
                # A clipped box must reach the image border it was cut by.
                assert xmin == 1 or ymin == 1 or xmax == record.width or ymax == record.height, obj


def test_voc_every_class_in_both_splits_and_flags_present(voc_records: dict[str, list[VocRecord]]) -> None:
    for records in voc_records.values():
        assert {obj.name for r in records for obj in r.objects} == set(VOC_TEST_CLASSES)
    objects = [obj for records in voc_records.values() for r in records for obj in r.objects]
    assert len(objects) >= 50
    assert 0 < sum(obj.difficult for obj in objects) < 0.35 * len(objects)
    assert 0 < sum(obj.truncated for obj in objects) < 0.6 * len(objects)


def box_ring_difference(pixels: np.ndarray, bbox: tuple[int, int, int, int], margin: int = 4) -> float | None:
    """Mean absolute difference between the mean colour inside a box and in a ring just outside it."""
    x0, y0, x1, y1 = bbox[0] - 1, bbox[1] - 1, bbox[2], bbox[3]
    h, w = pixels.shape[:2]
    ox0, oy0, ox1, oy1 = max(0, x0 - margin), max(0, y0 - margin), min(w, x1 + margin), min(h, y1 + margin)
    ring = np.ones((oy1 - oy0, ox1 - ox0), dtype=bool)
    ring[y0 - oy0 : y1 - oy0, x0 - ox0 : x1 - ox0] = False
    if not ring.any():
        return None
    outer = pixels[oy0:oy1, ox0:ox1][ring].mean(axis=0)
    inner = pixels[y0:y1, x0:x1].reshape(-1, 3).mean(axis=0)
    return float(np.abs(inner - outer).mean())


def test_voc_objects_stand_out_from_background(voc_records: dict[str, list[VocRecord]]) -> None:
    differences, correlations = [], []
    for record in voc_records["trainval"] + voc_records["test"]:
        pixels = load_rgb(record.image_path)
        correlations.append(neighbour_correlation(pixels))
        for obj in record.objects:
            difference = None if obj.difficult else box_ring_difference(pixels, obj.bbox)
            if difference is not None:
                differences.append(difference)
    assert len(differences) >= 30
    assert np.median(differences) > 25.0
    assert np.mean(np.asarray(differences) > 8.0) > 0.85
    assert np.mean(correlations) > 0.75


def test_voc_class_i_is_drawn_as_kind_i() -> None:
    """The shared-concept contract: the i-th configured VOC class is kind i, like ImageNet-style class i."""
    scene = Scene(np.zeros((64, 64, 3), np.float32))
    placement = Placement(kind=2, cx=32.0, cy=32.0, radius=20.0, aspect=1.0, theta=0.3)
    assert scene.add(np.random.default_rng(0), placement)
    assert [obj.name for obj in synthetic_voc._voc_objects(scene, ("dog", "cat", "bird"))] == ["bird"]
    _, objects = synthetic_voc.render_voc_image(
        np.random.default_rng(0), ("dog", "cat", "bird"), 64, 64, 1, first=1
    )
    assert [obj.name for obj in objects] == ["cat"]
    assert len(KINDS) >= 20 and len({kind.name for kind in KINDS}) == len(KINDS)
    assert {kind.pattern for kind in KINDS[:6]} == set(PATTERNS)


# ------------------------------------------------------------ validation


def test_unusable_voc_class_lists_are_named(tmp_path: Path) -> None:
    # Any names are drawable (a user may write "potted plant"); not blank, repeated or more than VOC has.
    for classes, named in (
        (("aeroplane", " "), r"classes: \[' '\] are not names"),
        (("aeroplane", "aeroplane"), r"classes: expected distinct names"),
        (tuple(f"c{i}" for i in range(21)), r"classes: 21 names; expected at most 20"),
    ):
        with pytest.raises(InputError, match=named):
            generate_voc(tmp_path / "voc", **{**VOC_ARGS, "classes": classes})
        assert not (tmp_path / "voc").exists()


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"trainval_images": 2}, "trainval_images"),
        ({"image_size": (96, 64)}, "image_size"),
        ({"image_size": 8}, "image_size"),
        ({"max_objects": 0}, "max_objects"),
        ({"classes": ("dog", "dog")}, "classes"),
        ({"classes": "dog"}, "classes"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_voc_arguments(tmp_path: Path, changes: dict[str, Any], named: str) -> None:
    with pytest.raises(InputError, match=named):
        generate_voc(tmp_path / "voc", **{**VOC_ARGS, **changes})


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"num_classes": 0}, "num_classes"),
        ({"num_classes": len(KINDS) + 1}, "num_classes"),
        ({"train_per_class": True}, "train_per_class"),
        ({"image_size": 16.0}, "image_size"),
    ],
)
def test_bad_imagenet_arguments(tmp_path: Path, changes: dict[str, Any], named: str) -> None:
    with pytest.raises(InputError, match=named):
        generate_imagenet(tmp_path / "in", **{**IMAGENET_ARGS, **changes})


# ------------------------------------------------------------ atomicity, CLI


def test_existing_root_is_replaced(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    (root / "stale.txt").write_text("old", encoding="utf-8")
    generate_imagenet(root, **IMAGENET_ARGS)
    assert not (root / "stale.txt").exists() and (root / "classes.txt").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_interrupted_run_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def failing_save(pixels: np.ndarray, path: Path) -> None:
        calls.append(path)
        if len(calls) > 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(synthetic_voc, "_save_jpeg", failing_save)
    with pytest.raises(KeyboardInterrupt):
        generate_voc(tmp_path / "voc", **VOC_ARGS)
    assert list(tmp_path.iterdir()) == []


def test_cli_matches_api(tmp_path: Path, voc_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def generate(kind: str, root: Path, seed: int, **options: Any) -> int:
        return main(["generate", "--kind", kind, "--root", str(root), "--seed", str(seed),
                     "--options", json.dumps(options)])  # fmt: skip

    options = {**VOC_ARGS, "classes": list(VOC_TEST_CLASSES), "image_size": [64, 96]}
    options.pop("seed", None)
    assert generate("voc", tmp_path / "voc", 0, **options) == 0
    assert tree_digest(tmp_path / "voc") == tree_digest(voc_root)
    bad = {**options, "classes": ["griffin", "griffin"], "trainval_images": 4, "test_images": 4}
    assert generate("voc", tmp_path / "bad", 0, **bad) == 2
    assert "griffin" in capsys.readouterr().err
    assert generate("imagefolder", tmp_path / "in", 3, num_classes=2, train_per_class=1, val_per_class=1,
                    image_size=32) == 0  # fmt: skip
