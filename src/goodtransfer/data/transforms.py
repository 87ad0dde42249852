"""ImageNet normalisation and the evaluation transform, shared by pretraining and every downstream task."""

from __future__ import annotations

from torchvision import transforms as T

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize() -> T.Compose:
    return T.Compose([T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def eval_transform(input_size: int, resize_ratio: float = 256 / 224) -> T.Compose:
    """Resize + centre crop, the ImageNet evaluation transform (Resize(256), CenterCrop(224))."""
    return T.Compose([T.Resize(round(input_size * resize_ratio)), T.CenterCrop(input_size), normalize()])
