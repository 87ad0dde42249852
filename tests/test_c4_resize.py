"""The C4 detectors resize and batch images as detectron2 0.6 does (``c4_transform``), and lay anchors at
res4's stride whatever the image size."""

from __future__ import annotations

import itertools

import pytest
import torch

from goodtransfer.io import read_yaml
from goodtransfer.models.backbone import build_resnet
from goodtransfer.transfer.c4 import STRIDE, build_c4_detector
from goodtransfer.transfer.c4_transform import shortest_edge_size
from tests.workflow import ROOT

PAPER_SIZES = {"min_size_train": [800], "min_size_test": 800, "max_size": 1333}


def detectron2_output_shape(oldh: int, oldw: int, short_edge_length: int, max_size: int) -> tuple[int, int]:
    """detectron2 0.6's ``ResizeShortestEdge.get_output_shape``, from its definition."""
    scale = short_edge_length / min(oldh, oldw)
    if oldh < oldw:
        newh, neww = float(short_edge_length), scale * oldw
    else:
        newh, neww = scale * oldh, float(short_edge_length)
    if max(newh, neww) > max_size:
        scale = max_size / max(newh, neww)
        newh, neww = newh * scale, neww * scale
    return int(newh + 0.5), int(neww + 0.5)


@pytest.fixture(scope="module")
def model():
    spec = {**read_yaml(ROOT / "config.yaml")["downstream"]["voc07"], **PAPER_SIZES}
    return build_c4_detector(build_resnet("resnet50"), 20, spec).eval()


def test_voc_500x375_resizes_to_1067x800_as_detectron2():
    assert shortest_edge_size(375, 500, 800, 1333, "nearest") == (800, 1067)
    assert shortest_edge_size(375, 500, 800, 1333, "floor") == (800, 1066)  # torchvision's


def test_nearest_rounding_is_detectron2s_formula():
    sides = range(97, 1601, 29)
    for (height, width), short in itertools.product(itertools.product(sides, sides), (480, 640, 800)):
        expected = detectron2_output_shape(height, width, short, 1333)
        assert shortest_edge_size(height, width, short, 1333, "nearest") == expected, (height, width, short)


def test_transform_resizes_image_and_boxes_by_the_exact_ratios(model):
    image = torch.rand(3, 375, 500)
    boxes = torch.tensor([[10.0, 20.0, 490.0, 370.0]])
    model.transform.train()
    try:
        images, targets = model.transform([image], [{"boxes": boxes, "labels": torch.tensor([1])}])
    finally:
        model.transform.eval()
    assert images.image_sizes == [(800, 1067)] and tuple(images.tensors.shape[-2:]) == (800, 1067)
    ratio = torch.tensor([1067 / 500, 800 / 375, 1067 / 500, 800 / 375])
    torch.testing.assert_close(targets[0]["boxes"], boxes * ratio)
    back = model.transform.postprocess([{"boxes": targets[0]["boxes"]}], images.image_sizes, [(375, 500)])
    torch.testing.assert_close(back[0]["boxes"], boxes)


def test_batch_is_padded_to_its_largest_image_only(model):
    images, _ = model.transform([torch.rand(3, 375, 500), torch.rand(3, 500, 375)])
    assert images.image_sizes == [(800, 1067), (1067, 800)]
    assert tuple(images.tensors.shape[-2:]) == (1067, 1067)


@torch.no_grad()
def test_800x1067_gives_67_res4_columns_and_anchors_at_stride_16(model):
    images, _ = model.transform([torch.rand(3, 800, 1067)])
    assert tuple(images.tensors.shape[-2:]) == (800, 1067)
    feature = model.backbone(images.tensors)
    assert tuple(feature.shape[-2:]) == (50, 67)
    (anchors,) = model.rpn.anchor_generator(images, [feature])
    per_cell = model.rpn.anchor_generator.num_anchors_per_location()[0]
    centres = ((anchors[:, :2] + anchors[:, 2:]) / 2).reshape(50, 67, per_cell, 2)
    torch.testing.assert_close(centres[0, 1, 0] - centres[0, 0, 0], torch.tensor([STRIDE, 0.0]))
    torch.testing.assert_close(centres[-1, -1, 0], torch.tensor([66.0 * STRIDE, 49.0 * STRIDE]))
