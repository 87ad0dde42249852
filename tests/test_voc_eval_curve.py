"""VOC fine-tuning with ``eval_period``: the test split is evaluated along the way (Fig. 4b), training
goes on as if it had not been, and a resumed run records the same curve as an uninterrupted one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from goodtransfer.checkpoint import save_backbone
from goodtransfer.data.synthetic.voc import generate_voc
from goodtransfer.models.backbone import backbone_state_dict, build_resnet
from goodtransfer.transfer import voc_detection
from tests.workflow import FP32_CPU, protocol_spec, run_protocol

CLASSES = ["aeroplane", "bicycle"]
TRAIN_SIZES, TEST_SIZE = (56, 64), 72  # different, so a size left behind by an evaluation shows


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("voc") / "VOC2007"
    generate_voc(
        root, classes=CLASSES, trainval_images=6, test_images=4, image_size=64, max_objects=2, seed=0
    )
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "random.pt"
    torch.manual_seed(0)
    meta = {"method": "random", "run": "r", "config_hash": "-", "epoch": 0, "arch": "resnet10"}
    save_backbone(path, backbone_state_dict(build_resnet("resnet10")), meta)
    return path


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _spec(**overrides) -> dict:
    # 32 proposals pooled to 8x8 (config.yaml's: 16 at 6x6): 6 iterations then detect something (AP > 0).
    roi_heads = {**protocol_spec("voc07", "r")["roi_heads"], "pooler_resolution": 8}
    roi_heads["batch_size_per_image"] = 32
    return protocol_spec("voc07", "r", roi_heads=roi_heads, **{
        "max_iter": 6, "base_lr": 0.005, "steps": [4], "warmup_iters": 1, "min_size_train": list(TRAIN_SIZES),
        "min_size_test": TEST_SIZE, "checkpoint_period": 3, "eval_period": 3, "classes": CLASSES, **FP32_CPU,
        **overrides})  # fmt: skip


def _run(spec: dict, checkpoint: Path, voc_root: Path, out: Path) -> dict:
    return run_protocol(spec, checkpoint, voc_root, out)


def test_curve_has_one_entry_per_period_ending_with_the_final_metrics_and_training_resumes_in_train_mode(
    voc_root: Path, checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[bool, tuple[int, ...]]] = []
    build = voc_detection.build_from_checkpoint

    def watched(*args):
        model = build(*args)
        model.register_forward_pre_hook(lambda m, _: calls.append((m.training, tuple(m.transform.min_size))))
        return model

    monkeypatch.setattr(voc_detection, "build_from_checkpoint", watched)
    metrics = _run(_spec(), checkpoint, voc_root, tmp_path)
    assert [point["iteration"] for point in metrics["curve"]] == [3, 6]
    assert metrics["curve"][-1] == {"iteration": 6, **{k: metrics[k] for k in ("AP", "AP50", "AP75")}}
    # 3 training steps, the test split in one batch, 3 more training steps, the final test.
    train, test = (True, TRAIN_SIZES), (False, (TEST_SIZE,))
    assert calls == [train] * 3 + [test] + [train] * 3 + [test]


def test_evaluating_along_the_way_leaves_training_as_it_was(
    voc_root: Path, checkpoint: Path, tmp_path: Path
) -> None:
    plain = _run(
        {k: v for k, v in _spec().items() if k != "eval_period"}, checkpoint, voc_root, tmp_path / "a"
    )
    _run(_spec(), checkpoint, voc_root, tmp_path / "b")
    assert "curve" not in plain
    detections = [(tmp_path / run / "detections.json").read_bytes() for run in ("a", "b")]
    assert detections[0] == detections[1]


def test_resumed_run_records_the_same_curve_as_an_uninterrupted_one(
    voc_root: Path, checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOODTRANSFER_KEEP_STATE", "1")
    whole = _run(_spec(), checkpoint, voc_root, tmp_path)
    detections = (tmp_path / "detections.json").read_bytes()
    # The state at iteration 3 is still on disk, as a run killed during iterations 4..6 would leave it.
    (tmp_path / "metrics.json").unlink()
    resumed = _run(_spec(), checkpoint, voc_root, tmp_path)
    assert resumed["resumed_from"] == 3
    assert resumed["curve"] == whole["curve"] and whole["curve"][0]["AP"] > 0
    assert (tmp_path / "detections.json").read_bytes() == detections
