"""Image transforms of the pre-training recipes (MAE / MaskAlign: random resized crop + flip)."""

from __future__ import annotations

from torchvision import transforms as T

from maskalign.teachers.base import IMAGENET_MEAN, IMAGENET_STD


def pretrain_transform(img_size: int, scale_min: float = 0.2) -> T.Compose:
    return T.Compose([
        T.RandomResizedCrop(img_size, scale=(scale_min, 1.0), interpolation=T.InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def eval_transform(img_size: int, crop_pct: float = 0.875) -> T.Compose:
    """Resize to ``img_size / crop_pct`` (256 for 224), center crop: the MAE evaluation transform.

    The size is truncated as MAE's ``build_transform`` does (``int(input_size / crop_pct)``): 438,
    not 439, at 384 px with crop 0.875."""
    return T.Compose([
        T.Resize(int(img_size / crop_pct), interpolation=T.InterpolationMode.BICUBIC),
        T.CenterCrop(img_size),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])

