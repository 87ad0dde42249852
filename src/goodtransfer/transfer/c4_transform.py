"""Resizing and batching of the C4 detectors' images as detectron2 0.6 does them.

torchvision's GeneralizedRCNNTransform resizes by a scale factor and rounds the new size down, and pads the
batch to a multiple of 32. detectron2's ``ResizeShortestEdge`` rounds to the nearest pixel (VOC's 500 x 375
becomes 1067 x 800 there, 1066 x 800 in torchvision), and its C4 backbone pads only to the largest image in
the batch (``SIZE_DIVISIBILITY`` 0). Spec keys: ``resize_rounding`` (``nearest``: detectron2's,
``floor``: torchvision's) and ``size_divisibility`` (0: no padding beyond the batch's largest image).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes

from goodtransfer.io import InputError

ROUNDINGS = ("nearest", "floor")


def shortest_edge_size(
    height: int, width: int, short_edge: int, max_size: int, rounding: str
) -> tuple[int, int]:
    """(new height, new width): the short side to ``short_edge``, the long side at most ``max_size``.

    ``nearest`` is detectron2's ``ResizeShortestEdge.get_output_shape``; ``floor`` is torchvision's
    ``interpolate(scale_factor=min(short / min, max / max))`` size.
    """
    if rounding == "floor":
        scale = min(short_edge / min(height, width), max_size / max(height, width))
        return math.floor(height * scale), math.floor(width * scale)
    if rounding != "nearest":
        raise InputError(f"spec: resize_rounding is {rounding!r}; expected one of {list(ROUNDINGS)}")
    size = short_edge * 1.0
    scale = size / min(height, width)
    new_h, new_w = (size, scale * width) if height < width else (scale * height, size)
    if max(new_h, new_w) > max_size:
        scale = max_size * 1.0 / max(new_h, new_w)
        new_h, new_w = new_h * scale, new_w * scale
    return int(new_h + 0.5), int(new_w + 0.5)


class C4Transform(GeneralizedRCNNTransform):
    """torchvision's normalise/resize/batch with an explicit output size (``shortest_edge_size``).

    The image is resized bilinearly as a float tensor (as torchvision does), ground-truth boxes by the exact
    per-axis ratio new / old (detectron2's ``ResizeTransform.apply_coords``); ``postprocess`` maps detections
    back by old / new per axis, as detectron2's ``detector_postprocess``.
    """

    def __init__(
        self,
        min_size: tuple[int, ...],
        max_size: int,
        image_mean: list[float],
        image_std: list[float],
        size_divisibility: int,
        resize_rounding: str,
    ) -> None:
        # detectron2's 0 (no padding beyond the batch's largest image) is torchvision's 1.
        super().__init__(min_size, max_size, image_mean, image_std, size_divisible=max(size_divisibility, 1))
        shortest_edge_size(1, 1, 1, 1, resize_rounding)  # an unknown rounding fails when the model is built
        self.resize_rounding = resize_rounding

    def resize(self, image: torch.Tensor, target: dict[str, Any] | None = None):
        height, width = image.shape[-2:]
        short = self.torch_choice(self.min_size) if self.training else self.min_size[-1]
        size = shortest_edge_size(int(height), int(width), short, self.max_size, self.resize_rounding)
        image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
        if target is None:
            return image, target
        target["boxes"] = resize_boxes(target["boxes"], [height, width], list(size))
        if "masks" in target:
            target["masks"] = F.interpolate(target["masks"][:, None].float(), size=size)[:, 0].byte()
        return image, target
