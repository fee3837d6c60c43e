"""Image transforms of the pre-training recipes (MAE / MaskAlign: random resized crop + flip)."""

from __future__ import annotations

from torchvision import transforms as T

from maskalign.teachers.base import IMAGENET_MEAN, IMAGENET_STD

Stats = tuple[float, float, float] | list[float]


def pretrain_transform(img_size: int, scale_min: float = 0.2, mean: Stats = IMAGENET_MEAN, std: Stats = IMAGENET_STD,
                       interpolation: str = "bicubic") -> T.Compose:
    return T.Compose([
        T.RandomResizedCrop(img_size, scale=(scale_min, 1.0), interpolation=T.InterpolationMode(interpolation)),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(tuple(mean), tuple(std)),
    ])


def eval_transform(img_size: int, crop_pct: float = 0.875, mean: Stats = IMAGENET_MEAN, std: Stats = IMAGENET_STD,
                   interpolation: str = "bicubic") -> T.Compose:
    """Resize to ``img_size / crop_pct`` (256 for 224), center crop: the MAE evaluation transform
    (with the encoder's own statistics and interpolation, :mod:`maskalign.encoders.preprocess`).

    The size is truncated as MAE's ``build_transform`` does (``int(input_size / crop_pct)``): 438,
    not 439, at 384 px with crop 0.875."""
    return T.Compose([
        T.Resize(int(img_size / crop_pct), interpolation=T.InterpolationMode(interpolation)),
        T.CenterCrop(img_size),
        T.ToTensor(),
        T.Normalize(tuple(mean), tuple(std)),
    ])

