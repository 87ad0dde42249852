"""Mini-ImageNet layout and the few-shot "Baseline" protocol of Table 4 (Chen et al. 2019)."""

from __future__ import annotations

import colorsys
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from goodtransfer.checkpoint import save_backbone
from goodtransfer.data import miniimagenet as mini
from goodtransfer.data.synthetic import miniimagenet as synthetic_mini
from goodtransfer.device import Compute
from goodtransfer.finite import DivergedError
from goodtransfer.io import InputError
from goodtransfer.models.backbone import backbone_state_dict, build_resnet
from goodtransfer.transfer import fewshot
from tests.workflow import run_protocol

SIZES = {"classes_per_split": (6, 5, 5), "images_per_class": 8, "image_size": 32}
OPT = {"lr": 0.01, "momentum": 0.9, "dampening": 0.9, "weight_decay": 0.001, "batch_size": 4}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mini") / "miniImagenet"
    synthetic_mini.generate(root, seed=3, **SIZES)
    return root


def _copy(data_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "copy"
    shutil.copytree(data_root, root)
    return root


# --------------------------------------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------------------------------------


def test_generated_tree_has_real_layout_and_check_counts(data_root: Path) -> None:
    assert (data_root / "train.csv").read_text().splitlines()[0] == "filename,label"
    first = (data_root / "test.csv").read_text().splitlines()[1]
    filename, wnid = first.split(",")
    assert filename == f"{wnid}00000001.jpg" and len(wnid) == 9 and wnid.startswith("n")
    summary = mini.check(data_root)
    assert summary["train"] == {"classes": 6, "images": 48, "min_per_class": 8, "max_per_class": 8}
    assert summary["val"]["classes"] == 5 and summary["test"]["images"] == 40


def test_load_split_returns_paths_labels_and_sorted_wnids(data_root: Path) -> None:
    paths, labels, classes = mini.load_split(data_root, "val")
    assert classes == sorted(classes) and len(classes) == 5
    assert len(paths) == len(labels) == 40 and all(p.is_file() for p in paths)
    assert all(p.name.startswith(classes[label]) for p, label in zip(paths, labels, strict=True))


def test_generation_is_byte_identical_for_a_seed(tmp_path: Path) -> None:
    sizes = {"classes_per_split": (2, 1, 1), "images_per_class": 2, "image_size": 24}
    synthetic_mini.generate(tmp_path / "a", seed=5, **sizes)
    synthetic_mini.generate(tmp_path / "b", seed=5, **sizes)
    synthetic_mini.generate(tmp_path / "c", seed=6, **sizes)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    assert any((tmp_path / "a" / f).read_bytes() != (tmp_path / "c" / f).read_bytes() for f in files)


@pytest.mark.parametrize("band", [0, 1])
def test_classes_beyond_the_kinds_get_their_own_colour_band(band: int) -> None:
    # Kind 0 is a solid disc always covering the image centre, so the centre pixel shows the tint.
    for n in range(5):
        pixels = synthetic_mini.render_class_image(np.random.default_rng([band, n]), 0, band, 2, 64)
        hue = colorsys.rgb_to_hsv(*(pixels[32, 32] / 255.0))[0]
        assert (band + 0.15) / 2 - 0.03 <= hue <= (band + 0.85) / 2 + 0.03


def test_missing_csv_is_named(data_root: Path, tmp_path: Path) -> None:
    root = _copy(data_root, tmp_path)
    (root / "val.csv").unlink()
    with pytest.raises(InputError, match=r"val\.csv: split file not found"):
        mini.load_split(root, "test")


def test_bad_header_is_named(data_root: Path, tmp_path: Path) -> None:
    root = _copy(data_root, tmp_path)
    text = (root / "test.csv").read_text().replace("filename,label", "image,class", 1)
    (root / "test.csv").write_text(text)
    with pytest.raises(InputError, match=r"test\.csv: line 1: header"):
        mini.check(root)


def test_row_with_wrong_field_count_names_its_line(data_root: Path, tmp_path: Path) -> None:
    root = _copy(data_root, tmp_path)
    with (root / "train.csv").open("a") as handle:
        handle.write("a.jpg,n01,extra\n")
    with pytest.raises(InputError, match=r"train\.csv: line 50: got 3 fields"):
        mini.load_split(root, "train")


def test_class_in_two_splits_is_rejected(data_root: Path, tmp_path: Path) -> None:
    root = _copy(data_root, tmp_path)
    train_row = (root / "train.csv").read_text().splitlines()[1]
    with (root / "test.csv").open("a") as handle:
        handle.write(train_row + "\n")
    with pytest.raises(InputError, match=r"class n9\d+ is also in train\.csv"):
        mini.load_split(root, "test")


def test_check_names_a_missing_image(data_root: Path, tmp_path: Path) -> None:
    root = _copy(data_root, tmp_path)
    victim = mini.load_split(root, "val")[0][7]
    victim.unlink()
    with pytest.raises(InputError, match=rf"{victim.name}: image listed in val\.csv line 9 not found"):
        mini.check(root)


def test_base_split_is_deterministic_disjoint_and_holds_out_per_class(data_root: Path) -> None:
    parts = mini.base_class_split(data_root, 0.25, seed=1)
    again = mini.base_class_split(data_root, 0.25, seed=1)
    other = mini.base_class_split(data_root, 0.25, seed=2)
    (train, train_y), (val, val_y) = parts["base_train"], parts["base_val"]
    assert parts == again and parts["base_val"] != other["base_val"]
    assert not set(train) & set(val) and len(train) + len(val) == 48
    assert np.bincount(val_y).tolist() == [2] * 6 and np.bincount(train_y).tolist() == [6] * 6
    assert (
        mini.labelled_images(data_root, "base_train", held_out_fraction=0.25, seed=1) == parts["base_train"]
    )
    with pytest.raises(InputError, match="held_out_fraction"):
        mini.base_class_split(data_root, 1.0)


# --------------------------------------------------------------------------------------------------------
# Episodes and the per-episode classifier
# --------------------------------------------------------------------------------------------------------


def test_episodes_have_distinct_classes_disjoint_support_and_query_and_repeat_for_a_seed() -> None:
    labels = np.repeat(np.arange(8), 10)
    draw = {"n_way": 5, "n_shot": 2, "n_query": 3, "episodes": 20, "stream": 0}
    episodes = fewshot.sample_episodes(labels, seed=4, **draw)
    for support, query in zip(episodes.support, episodes.query, strict=True):
        ways = labels[support[:, 0]]
        assert len(set(ways.tolist())) == 5
        assert (labels[support] == ways[:, None]).all() and (labels[query] == ways[:, None]).all()
        assert not set(support.ravel()) & set(query.ravel())
    same = fewshot.sample_episodes(labels, seed=4, **draw)
    other = fewshot.sample_episodes(labels, seed=5, **draw)
    assert np.array_equal(episodes.support, same.support) and np.array_equal(episodes.seeds, same.seeds)
    assert not np.array_equal(episodes.support, other.support)


def test_episode_classifier_is_perfect_on_separable_features() -> None:
    generator = torch.Generator().manual_seed(0)
    labels = np.repeat(np.arange(6), 12)
    features = 3.0 * torch.eye(16)[labels] + 0.1 * torch.randn(len(labels), 16, generator=generator)
    spec = {"epochs": 100, **{k: v for k, v in OPT.items() if k != "lr"}}
    for shot in (1, 5):
        episodes = fewshot.sample_episodes(
            labels, n_way=5, n_shot=shot, n_query=6, episodes=8, seed=0, stream=0
        )
        accuracies = fewshot.episode_accuracies(features, episodes, spec, 0.01, torch.device("cpu"))
        assert accuracies.tolist() == [100.0] * 8


def test_batched_training_matches_nn_linear_with_torch_sgd_per_episode() -> None:
    generator = torch.Generator().manual_seed(1)
    episodes, support, dim, n_way = 3, 10, 8, 5  # 10 = 5-way 2-shot: batches of 4, 4, 2
    x = torch.randn(episodes, support, dim, generator=generator)
    y = torch.arange(n_way).repeat_interleave(2).expand(episodes, -1)
    w0, b0, perms = fewshot.classifier_randomness([11, 12, 13], dim, n_way, support, epochs=20)
    opt = {**OPT, "lr": 0.1}
    w, b = fewshot.train_linear_batched(x, y, w0, b0, perms, opt)
    queries = torch.randn(episodes, 30, dim, generator=generator)
    for e in range(episodes):
        reference = fewshot.train_linear_episode(x[e], y[e], w0[e], b0[e], perms[e], opt)
        assert torch.allclose(w[e], reference.weight, atol=1e-5) and torch.allclose(
            b[e], reference.bias, atol=1e-5
        )
        with torch.no_grad():
            assert torch.equal((queries[e] @ w[e].T + b[e]).argmax(1), reference(queries[e]).argmax(1))
    assert not torch.allclose(w, w0)


def test_base_classifier_that_diverges_stops_naming_the_step_and_base_lr() -> None:
    cpu = Compute.from_spec({"device": "cpu", "precision": "fp32", "channels_last": False})
    x, y = torch.randn(40, 8) * 1e20, torch.arange(40) % 4
    spec = _spec(base_lr=1e20, protocol="fewshot")
    with pytest.raises(DivergedError, match=r"loss is nan at epoch 1 step 2 .*downstream\.fewshot\.base_lr"):
        fewshot.base_accuracy((x, y), (x, y), spec, cpu)


# --------------------------------------------------------------------------------------------------------
# End to end
# --------------------------------------------------------------------------------------------------------


def _spec(**overrides: object) -> dict:
    spec = {
        "task": "fewshot", "dataset": "miniimagenet", "data_kind": "miniimagenet", "protocol": "fewshot",
        "run": "fewshot-tiny", "seed": 0, "device": "cpu", "precision": "fp32", "channels_last": False,
        "input_size": 32, "resize_ratio": 1.15, "feature_batch_size": 32, "workers": 0,
        "n_way": 5, "shots": [1, 2], "n_query": 3, "episodes": 10,
        "lr": 0.01, "epochs": 30, "batch_size": 4, "momentum": 0.9, "dampening": 0.9, "weight_decay": 0.001,
        "lr_candidates": [0.01, 0.1], "val_episodes": 5,
        "base_held_out": 0.25, "base_split_seed": 0, "base_epochs": 5, "base_lr": 0.1,
        "base_milestones": [3, 4], "base_batch_size": 16, "base_momentum": 0.9, "base_weight_decay": 0.0,
    }  # fmt: skip
    return {**spec, **overrides}


def test_run_writes_metrics_and_reuses_cached_features(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    checkpoint = tmp_path / "random.pt"
    state = {"arch": "resnet10", "method": "random", "run": "t"}
    save_backbone(checkpoint, backbone_state_dict(build_resnet("resnet10")), state)
    spec = _spec()
    run_protocol(spec, checkpoint, data_root, tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("acc_1shot", "acc_2shot", "base_acc"):
        assert 0.0 <= metrics[key] <= 100.0
    assert metrics["ci95_1shot"] > 0 and metrics["ci95_2shot"] > 0
    assert metrics["selected_lr"] in (0.01, 0.1) and set(metrics["lr_search"]) == {"0.01", "0.1"}
    assert (
        metrics["run"] == "fewshot-tiny"
        and metrics["config_hash"]
        and metrics["checkpoint"] == str(checkpoint)
    )
    assert not (tmp_path / "state").exists(), "the feature cache outlived the finished job"
    # Killed after every feature was extracted: the rerun reads the cache and gives the same numbers.
    with monkeypatch.context() as patch:
        patch.setattr(fewshot, "base_accuracy", _killed)
        with pytest.raises(KeyboardInterrupt):
            run_protocol(spec, checkpoint, data_root, tmp_path)
    cached = sorted(p.name for p in (tmp_path / "state").iterdir())
    assert cached == [f"features_{n}.pt" for n in ("base_train", "base_val", "test", "val")]
    capsys.readouterr()
    again = run_protocol(spec, checkpoint, data_root, tmp_path)
    assert capsys.readouterr().err.count("reusing") == 4
    assert {k: v for k, v in again.items() if k != "seconds"} == {
        k: v for k, v in metrics.items() if k != "seconds"
    }


def test_cached_features_of_other_backbone_weights_at_the_same_path_are_not_reused(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    checkpoint = tmp_path / "backbone.pt"
    meta = {"arch": "resnet10", "method": "random", "run": "t"}
    torch.manual_seed(0)
    save_backbone(checkpoint, backbone_state_dict(build_resnet("resnet10")), meta)
    with monkeypatch.context() as patch:
        patch.setattr(fewshot, "base_accuracy", _killed)
        with pytest.raises(KeyboardInterrupt):
            run_protocol(_spec(), checkpoint, data_root, tmp_path)
    torch.manual_seed(1)  # retrained: other weights, same path
    save_backbone(checkpoint, backbone_state_dict(build_resnet("resnet10")), meta)
    capsys.readouterr()
    run_protocol(_spec(), checkpoint, data_root, tmp_path)
    assert "reusing" not in capsys.readouterr().err


def _killed(*args, **kwargs):
    raise KeyboardInterrupt("killed")


def test_run_rejects_a_bad_spec_naming_the_key(data_root: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"downstream\.fewshot\.shots: \[\] should be non-empty"):
        run_protocol(_spec(shots=[]), tmp_path / "x.pt", data_root, tmp_path)
    spec = _spec()
    del spec["base_lr"]
    with pytest.raises(InputError, match="downstream.fewshot: 'base_lr' is a required property"):
        run_protocol(spec, tmp_path / "x.pt", data_root, tmp_path)
