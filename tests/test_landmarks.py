"""CelebA/MAFL lists, the generated face stand-in, and the MAFL landmark fine-tuning protocol."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from goodtransfer import config as gtc
from goodtransfer.checkpoint import load_torch, save_backbone
from goodtransfer.data import celeba
from goodtransfer.data.registry import pretraining_images
from goodtransfer.data.synthetic import celeba as synthetic_celeba
from goodtransfer.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from goodtransfer.io import InputError, read_yaml
from goodtransfer.models.backbone import backbone_state_dict, build_resnet
from goodtransfer.transfer import landmarks as protocol
from tests.workflow import run_protocol

HEADER = " ".join(celeba.LANDMARK_HEADER)
TINY_SPEC: dict[str, Any] = {
    "task": "landmarks",
    "dataset": "celeba",
    "data_kind": "celeba",
    "protocol": "mafl",
    "run": "tiny",
    "seed": 0,
    "device": "cpu",
    "precision": "fp32",
    "channels_last": False,
    "input_size": 48,
    "epochs": 2,
    "batch_size": 16,
    "lr": 0.02,
    "schedule": "cosine",
    "optimizer": "sgd",
    "momentum": 0.9,
    "weight_decay": 0.0001,
    "head_channels": 16,
    "leaky_slope": 0.01,
    "flip": True,
    "workers": 0,
    "log_period": 1,
    "checkpoint_period": 1,
}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("celeba") / "celeba"
    synthetic_celeba.generate(root, seed=0, identities=8, images_per_identity=5, mafl_train=32, mafl_test=8,
                    image_size=(64, 64))  # fmt: skip
    return root


@pytest.fixture(scope="module")
def full_size_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("celeba_full") / "celeba"
    synthetic_celeba.generate(root, seed=3, identities=3, images_per_identity=4, mafl_train=8, mafl_test=2)
    return root


@pytest.fixture(scope="module")
def finished_run(tiny_root: Path, random_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted tiny run: ``metrics.json`` and ``state/last.pt`` under the returned folder."""
    out = tmp_path_factory.mktemp("run")
    run_protocol(TINY_SPEC, random_checkpoint, tiny_root, out)
    return out


@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "random.pth"
    meta = {"arch": "resnet10", "method": "random", "run": "t"}
    save_backbone(path, backbone_state_dict(build_resnet("resnet10")), meta)
    return path


# ---------------------------------------------------------------- list readers on hand-written files


def test_landmark_list_is_read_after_count_and_header_with_any_spacing(tmp_path: Path) -> None:
    rows = "000001.jpg    69  109  106  113   77  142   73  152  108  154\n000002.jpg 1 2 3 4 5 6 7 8 9 10\n"
    write(tmp_path / celeba.LANDMARKS_FILE, f"2\n{HEADER}\n{rows}")
    points = celeba.landmarks(tmp_path)
    assert sorted(points) == ["000001.jpg", "000002.jpg"]
    np.testing.assert_array_equal(
        points["000001.jpg"], [[69, 109], [106, 113], [77, 142], [73, 152], [108, 154]]
    )
    assert points["000002.jpg"].shape == (5, 2)


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (f"1\n{HEADER}\n000001.jpg 1 2 3 4 5 6 7 8 9\n", ":3: has 10 fields"),
        (f"1\n{HEADER}\n000001.jpg 1 2 3 4 5 6 7 8 9 x\n", ":3: coordinates"),
        (f"2\n{HEADER}\n000001.jpg 1 2 3 4 5 6 7 8 9 10\n", ":1: says 2 images but lists 1"),
        ("1\nlefteye_x lefteye_y\n000001.jpg 1 2 3 4 5 6 7 8 9 10\n", ":2: header is"),
        (
            f"1\n{HEADER}\n\n000001.jpg 1 2 3 4 5 6 7 8 9 10\n000001.jpg 1 2 3 4 5 6 7 8 9 10\n",
            ":5: 000001.jpg",
        ),
    ],
)
def test_malformed_landmark_list_names_file_and_line(tmp_path: Path, body: str, where: str) -> None:
    path = write(tmp_path / celeba.LANDMARKS_FILE, body)
    with pytest.raises(InputError, match=f"{path}{where}"):
        celeba.landmarks(tmp_path)


def test_identity_and_partition_lists_are_read_and_bad_values_name_the_line(tmp_path: Path) -> None:
    write(tmp_path / celeba.IDENTITY_FILE, "000001.jpg 2880\n000002.jpg 2937\n")
    path = write(tmp_path / celeba.PARTITION_FILE, "000001.jpg 0\n000002.jpg 3\n")
    assert celeba.identities(tmp_path) == {"000001.jpg": 2880, "000002.jpg": 2937}
    with pytest.raises(InputError, match=f"{path}:2: .*one of \\[0, 1, 2\\]"):
        celeba.eval_partition(tmp_path)


def test_mafl_file_without_landmarks_entry_names_mafl_file_and_line(tmp_path: Path) -> None:
    write(tmp_path / celeba.LANDMARKS_FILE, f"1\n{HEADER}\n000001.jpg 1 2 3 4 5 6 7 8 9 10\n")
    write(tmp_path / "MAFL/training.txt", "000001.jpg\n")
    test_list = write(tmp_path / "MAFL/testing.txt", "000001.jpg\n000009.jpg\n")
    paths, points = celeba.mafl_samples(tmp_path, "train")
    assert paths == [tmp_path / celeba.IMAGE_DIR / "000001.jpg"] and points.shape == (1, 5, 2)
    assert celeba.mafl_split(tmp_path, "test") == ["000001.jpg", "000009.jpg"]
    with pytest.raises(
        InputError, match=f"{test_list}:2: 000009.jpg has no entry in .*{celeba.LANDMARKS_FILE}"
    ):
        celeba.mafl_samples(tmp_path, "test")


def test_labelled_images_give_contiguous_labels_and_can_leave_out_mafl_test(tmp_path: Path) -> None:
    write(tmp_path / celeba.IDENTITY_FILE, "000001.jpg 50\n000002.jpg 7\n000003.jpg 50\n000004.jpg 9000\n")
    write(tmp_path / "MAFL/testing.txt", "000002.jpg\n")
    paths, labels = celeba.labelled_images(tmp_path, exclude_mafl_test=False)
    assert [p.name for p in paths] == ["000001.jpg", "000002.jpg", "000003.jpg", "000004.jpg"]
    assert labels == [1, 0, 1, 2]
    paths, labels = celeba.labelled_images(tmp_path, exclude_mafl_test=True)
    assert [p.name for p in paths] == ["000001.jpg", "000003.jpg", "000004.jpg"] and labels == [0, 0, 1]


# ---------------------------------------------------------------- generated stand-in and check()


def test_check_counts_generated_stand_in_with_disjoint_mafl_splits(tiny_root: Path) -> None:
    summary = celeba.check(tiny_root)
    assert summary["images"] == 40 and summary["identities"] == 8
    assert summary["mafl_train"] == 32 and summary["mafl_test"] == 8
    assert sum(summary["partitions"].values()) == 40
    train, test = celeba.mafl_split(tiny_root, "train"), celeba.mafl_split(tiny_root, "test")
    assert not set(train) & set(test) and set(train) | set(test) <= set(celeba.landmarks(tiny_root))
    with Image.open(tiny_root / celeba.IMAGE_DIR / train[0]) as image:
        assert image.size == (64, 64) and image.format == "JPEG"


def test_pretraining_reads_the_configured_celeba_partitions_without_mafl_test(tiny_root: Path) -> None:
    partition, test = celeba.eval_partition(tiny_root), set(celeba.mafl_split(tiny_root, "test"))
    for chosen in (["train"], ["val", "test"], ["train", "val", "test"]):
        codes = {celeba.PARTITIONS[name] for name in chosen}
        expected = sorted(n for n, code in partition.items() if code in codes and n not in test)
        images = pretraining_images("celeba", tiny_root, None, chosen)
        assert [path.name for path in images.paths] == expected, chosen
    assert len(pretraining_images("celeba", tiny_root, None)) == len(partition) - len(test)  # unset: all
    assert 0 < len(pretraining_images("celeba", tiny_root, None, ["train"])) < len(partition) - len(test)


def test_paper_preset_pretrains_on_celeba_train_partition_only() -> None:
    root = Path(__file__).resolve().parents[1]
    config = read_yaml(root / "config.yaml")
    paper = gtc.deep_merge(config, read_yaml(root / "presets/paper.yaml"))
    for run in ("mafl-supervised", "mafl-mocov2", "mafl-exemplarv2", "supervised-celeba", "mocov2-celeba"):
        assert gtc.pretrain_spec(paper, run)["partitions"] == ["train"], run
    assert gtc.pretrain_spec(config, "mafl-supervised")["partitions"] == ["train", "val", "test"]
    assert "partitions" not in gtc.pretrain_spec(paper, "mocov2-frcgb")  # ImageNet has none


def test_check_names_a_missing_landmarks_file(tiny_root: Path, tmp_path: Path) -> None:
    copy = tmp_path / "celeba"
    shutil.copytree(tiny_root, copy)
    (copy / celeba.LANDMARKS_FILE).unlink()
    with pytest.raises(
        InputError, match=f"{copy / celeba.LANDMARKS_FILE}: missing; expected the CelebA layout"
    ):
        celeba.check(copy)
    synthetic_celeba.generate(copy, seed=0, identities=2, images_per_identity=2, mafl_train=2, mafl_test=1,
                    image_size=(32, 32))  # fmt: skip
    (copy / celeba.IMAGE_DIR / "000003.jpg").unlink()
    with pytest.raises(InputError, match="000003.jpg: missing"):
        celeba.check(copy)


def test_generator_is_byte_identical_for_a_seed(tmp_path: Path) -> None:
    options = {
        "identities": 3,
        "images_per_identity": 2,
        "mafl_train": 3,
        "mafl_test": 2,
        "image_size": (48, 40),
    }
    synthetic_celeba.generate(tmp_path / "a", seed=5, **options)
    synthetic_celeba.generate(tmp_path / "b", seed=5, **options)
    synthetic_celeba.generate(tmp_path / "c", seed=6, **options)
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b") != tree_digest(tmp_path / "c")


def luminance(pixels: np.ndarray) -> np.ndarray:
    return pixels.astype(np.float64) @ [0.299, 0.587, 0.114]


def test_written_landmarks_lie_on_the_drawn_eyes_nose_and_mouth_corners(full_size_root: Path) -> None:
    for name, points in celeba.landmarks(full_size_root).items():
        pixels = np.asarray(Image.open(full_size_root / celeba.IMAGE_DIR / name).convert("RGB")).astype(float)
        at = {k: pixels[int(y), int(x)] for k, (x, y) in enumerate(points)}
        # Skin between the left eye and the left mouth corner, away from every feature.
        cheek = pixels[tuple(np.rint((points[0] + points[3]) / 2).astype(int)[::-1])]
        for eye in (0, 1):
            assert luminance(at[eye]) < min(80, luminance(cheek) - 30), (name, eye)
        assert luminance(at[2]) < 0.75 * luminance(cheek), name
        for corner in (3, 4):
            assert at[corner][0] - at[corner][1] > 60 and at[corner][1] < cheek[1] - 25, (name, corner)
        assert points[0, 0] < points[1, 0] and points[3, 0] < points[4, 0]  # MAFL's left = image left


def test_identity_keeps_its_skin_tone_across_images(full_size_root: Path) -> None:
    ids, tones = celeba.identities(full_size_root), {}
    for name, points in celeba.landmarks(full_size_root).items():
        pixels = np.asarray(Image.open(full_size_root / celeba.IMAGE_DIR / name).convert("RGB")).astype(float)
        tones.setdefault(ids[name], []).append(
            pixels[tuple(np.rint((points[1] + points[4]) / 2).astype(int)[::-1])]
        )
    within = max(np.ptp(np.stack(v), axis=0).max() for v in tones.values())
    means = np.stack([np.mean(v, axis=0) for v in tones.values()])
    assert within < 20 < np.ptp(means, axis=0).max()


# ---------------------------------------------------------------- protocol pieces


def test_unit_coordinates_invert_and_mirror_as_pixels_do() -> None:
    points = np.array([[[10.0, 20.0], [30.0, 21.0], [20.0, 30.0], [12.0, 40.0], [28.0, 41.0]]])
    units = protocol.to_unit(points, np.array([[40, 50]]))
    np.testing.assert_allclose(protocol.from_unit(units, np.array([[40, 50]])), points)
    mirrored = protocol.from_unit(protocol.flip_points(units), np.array([[40, 50]]))
    # Pixel x maps to 39 - x, and the left/right eye and mouth corners trade places.
    np.testing.assert_allclose(mirrored[0], [[9, 21], [29, 20], [19, 30], [11, 41], [27, 40]])


def test_flipped_sample_keeps_eyes_on_the_dark_pupils_in_left_right_order(full_size_root: Path) -> None:
    paths, points = celeba.mafl_samples(full_size_root, "train")
    data = protocol.MaflData(paths, points, (218, 178))
    image, target, size = data[(0, True)]
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    pixels = ((image * std + mean) * 255).permute(1, 2, 0).numpy()
    flipped = protocol.from_unit(target.numpy().reshape(5, 2), size.numpy())
    assert flipped[0, 0] < flipped[1, 0] and flipped[3, 0] < flipped[4, 0]
    for x, y in np.rint(flipped[:2]).astype(int):
        assert luminance(pixels[y, x]) < 80
    np.testing.assert_allclose(flipped[:, 1], points[0][list(protocol.FLIP_ORDER), 1], atol=1e-4)


def test_regressor_head_sees_the_spatial_res5_map_of_non_square_inputs() -> None:
    model = protocol.LandmarkRegressor(build_resnet("resnet10"), (72, 60), channels=8, slope=0.01)
    assert model.head[0].in_channels == 512 and model.head[-1].in_features == 8 * 3 * 2
    assert model(torch.zeros(2, 3, 72, 60)).shape == (2, 10)


def test_spec_without_a_key_is_refused_naming_it(tmp_path: Path, random_checkpoint: Path) -> None:
    spec = {k: v for k, v in TINY_SPEC.items() if k != "optimizer"}
    with pytest.raises(InputError, match=r"downstream\.mafl: 'optimizer' is a required property"):
        run_protocol(spec, random_checkpoint, tmp_path, tmp_path)


# ---------------------------------------------------------------- end to end and resume


def test_run_writes_finite_error_and_train_loss(finished_run: Path, random_checkpoint: Path) -> None:
    metrics = json.loads((finished_run / "metrics.json").read_text())
    assert 0 < metrics["error"] < 1000 and np.isfinite(metrics["train_loss"])
    assert metrics["train_images"] == 32 and metrics["test_images"] == 8 and metrics["resumed_from"] == 0
    assert metrics["run"] == "tiny" and metrics["checkpoint"] == str(random_checkpoint)


def test_resume_after_interrupted_epoch_ends_with_bitwise_same_weights(
    finished_run: Path,
    tiny_root: Path,
    random_checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_loader, calls = protocol._loader, []

    def dies_in_second_epoch(*args: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed during epoch 2")
        return real_loader(*args)

    monkeypatch.setattr(protocol, "_loader", dies_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        run_protocol(TINY_SPEC, random_checkpoint, tiny_root, tmp_path)
    assert not (tmp_path / "metrics.json").exists()
    assert load_torch(tmp_path / "state" / "last.pt")["epoch"] == 1
    monkeypatch.setattr(protocol, "_loader", real_loader)
    run_protocol(TINY_SPEC, random_checkpoint, tiny_root, tmp_path)
    whole, resumed = (json.loads((d / "metrics.json").read_text()) for d in (finished_run, tmp_path))
    assert resumed["resumed_from"] == 1
    assert (whole["error"], whole["train_loss"]) == (resumed["error"], resumed["train_loss"])
    assert not (tmp_path / "state").exists(), "the resumable state outlived the finished job"
