"""Data of the classification transfer jobs: where ImageNet is, its transforms, sharded loaders.

``data.root`` names a real ImageNet (the folder holding ``train/`` and ``val/``); left empty, the
jobs use the demo world's small ImageNet look-alike (built on first use under ``data.demo_root``,
by default ``$MASKALIGN_DEMO_ROOT`` or ``<repo>/output/demo_world``), so every script runs offline.
Never is a demo world written into a user's data folder.

Transforms follow MAE's ``util/datasets.py::build_transform``: fine-tuning trains on timm's
``create_transform`` (RandomResizedCrop, RandAugment, random erasing), linear probing on
RandomResizedCrop + flip, and both evaluate with resize to ``img_size / crop_pct`` and a center crop.
``data.decode`` (``maskalign.data.decode``) moves the training set's decoding and crop/flip onto the
GPU where the recipe allows it (not under RandAugment, which works on PIL images); every image's
augmentation is seeded per image and epoch (``maskalign.data.keyed``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset, Sampler

from maskalign.config import ConfigError
from maskalign.data.decode import DeviceRecipe, build_loader, resolve_decode
from maskalign.data.imagenet import DataError, SafeImageFolder, image_folder
from maskalign.data.keyed import EpochKeys
from maskalign.data.transforms import eval_transform
from maskalign.distributed import DistInfo
from maskalign.encoders.preprocess import Preprocess


def imagenet_root(data_cfg: Any) -> tuple[Path, str]:
    """``(root, "imagenet")`` for ``data.root``, else the demo world's copy and ``"demo"``."""
    if data_cfg.root:
        return Path(str(data_cfg.root)).expanduser(), "imagenet"
    from maskalign.data.demo_world import ensure_imagenet

    return ensure_imagenet(data_cfg.demo_root or None), "demo"


def classification_sets(cfg: Any, img_size: int, train_transform: Callable,
                        prep: Preprocess | None = None) -> tuple[SafeImageFolder, SafeImageFolder, Path, str]:
    """Train and val folders of ImageNet (or the demo copy), checked to share one class list; the
    validation transform uses the encoder's preprocessing ``prep`` (ImageNet's when not given)."""
    if cfg.data.dataset not in ("auto", "demo", "imagenet"):
        raise ConfigError(f"data.dataset: unknown {cfg.data.dataset!r}; use auto, demo or imagenet")
    if cfg.data.dataset == "imagenet" and not cfg.data.root:
        raise ConfigError("data.dataset=imagenet needs data.root=<folder holding train/ and val/>")
    if cfg.data.dataset == "demo" and cfg.data.root:
        raise ConfigError("data.dataset=demo takes no data.root (the demo world lives under data.demo_root)")
    root, kind = imagenet_root(cfg.data)
    train = image_folder(root, "train", train_transform)
    val = image_folder(root, "val", eval_transform(img_size, crop_pct_for(cfg, prep), **_stats(prep)))
    if train.classes != val.classes:
        raise DataError(f"{root}: train/ and val/ hold different class folders "
                        f"({len(train.classes)} vs {len(val.classes)})")
    _choose_decode(cfg, train, train_transform)
    return train, val, root, kind


def _choose_decode(cfg: Any, train: SafeImageFolder, train_transform: Callable) -> None:
    """Mark ``train`` with ``data.decode``'s answer (read by ``train_loader``)."""
    from maskalign.distributed import process_env, resolve_device

    recipe = getattr(train_transform, "device_recipe", None)
    why_not = getattr(train_transform, "device_unavailable", "this augmentation has no device version")
    try:
        device = resolve_device(str(cfg.runtime.device))
    except RuntimeError:  # runtime.device=cuda without CUDA: the job says so itself, later
        device = torch.device("cpu")
    main = process_env().rank == 0
    train.decode = resolve_decode(str(cfg.data.get("decode", "auto")), device, recipe, why_not,  # type: ignore[attr-defined]
                                  log=print if main else (lambda _m: None))
    train.device_recipe = recipe  # type: ignore[attr-defined]


def posterize_any_bits(img: Image.Image, bits_to_keep: int, **_: Any) -> Image.Image:
    """timm's posterize op, also for 0 bits: a black image, as Pillow < 13 made it.

    RandAugment's ``PosterizeIncreasing`` keeps 0 bits at magnitude 10, which ``m9-mstd0.5`` reaches;
    Pillow 13 raises on that (bits must be 1..8), which would fail (or, under a data set that skips
    unreadable files, silently drop) a random share of training images.
    """
    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)
    return ImageOps.posterize(img, bits_to_keep)


def _stats(prep: Preprocess | None) -> dict[str, Any]:
    prep = prep or Preprocess()
    return {"mean": tuple(prep.mean), "std": tuple(prep.std), "interpolation": prep.interpolation}


def encoder_preprocess(meta: dict[str, Any]) -> Preprocess:
    """The preprocessing the loader put in the encoder's metadata (ImageNet's for metadata without it)."""
    stored = meta.get("preprocess")
    return Preprocess.from_dict(stored) if isinstance(stored, dict) else Preprocess()


def crop_pct_for(cfg: Any, prep: Preprocess | None) -> float:
    """The evaluation crop: the encoder's where its source states one, else the recipe's ``data.crop_pct``."""
    return float(prep.crop_pct) if prep is not None and prep.crop_pct else float(cfg.data.crop_pct)


def finetune_train_transform(img_size: int, aug: Any, prep: Preprocess | None = None) -> Callable:
    """MAE's fine-tuning augmentation through timm (``color_jitter`` off under RandAugment), with the
    encoder's mean, std and interpolation."""
    from timm.data import create_transform

    stats = _stats(prep)
    transform = create_transform(
        input_size=img_size, is_training=True, scale=(float(aug.scale_min), 1.0),
        color_jitter=aug.color_jitter, auto_augment=aug.auto_augment or None, interpolation=stats["interpolation"],
        re_prob=float(aug.reprob), re_mode=aug.remode, re_count=int(aug.recount),
        mean=stats["mean"], std=stats["std"])
    for t in getattr(transform, "transforms", []):
        for op in getattr(t, "ops", []):
            if "Posterize" in getattr(op, "name", ""):
                op.aug_fn = posterize_any_bits
    if aug.auto_augment:
        transform.device_unavailable = "RandAugment (aug.auto_augment) works on PIL images, on the CPU"
    elif aug.color_jitter:
        transform.device_unavailable = "colour jitter (aug.color_jitter) has no device version here"
    else:
        transform.device_recipe = DeviceRecipe(img_size, float(aug.scale_min), float(aug.reprob), str(aug.remode),
                                               int(aug.recount), stats["mean"], stats["std"])
    return transform


def linprobe_train_transform(img_size: int, prep: Preprocess | None = None) -> Callable:
    """MAE's linear-probing augmentation: RandomResizedCrop (bicubic) and a horizontal flip."""
    from maskalign.data.transforms import pretrain_transform

    stats = _stats(prep)
    transform = pretrain_transform(img_size, scale_min=0.08, **stats)
    transform.device_recipe = DeviceRecipe(img_size, 0.08, mean=stats["mean"], std=stats["std"])  # type: ignore[attr-defined]
    return transform


class ShardSampler(Sampler[int]):
    """Every ``world``-th index from ``rank``: an exact partition, no padding, for evaluation.

    ``DistributedSampler`` pads the last shard with repeats, which biases accuracy slightly;
    summing correct counts over these shards gives exactly the single-process number.
    """

    def __init__(self, n: int, rank: int = 0, world: int = 1) -> None:
        self.n, self.rank, self.world = n, rank, world

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.world))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world))


def train_loader(dataset: Dataset, per_proc_batch: int, info: DistInfo, seed: int,
                 num_workers: int) -> tuple[Any, EpochKeys]:
    """Shuffled, ``drop_last`` (mixup pairs a batch with its flip, so batches stay full); decoded on
    the device if ``classification_sets`` chose that (``dataset.decode``)."""
    return build_loader(dataset, per_proc_batch, info.rank, info.world_size, seed, num_workers, info.device,
                        getattr(dataset, "decode", "cpu"), getattr(dataset, "device_recipe", None),
                        persistent_workers=True)


def eval_loader(dataset: Dataset, batch_size: int, info: DistInfo, num_workers: int) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, sampler=ShardSampler(len(dataset), info.rank, info.world_size),
                      num_workers=num_workers, pin_memory=info.device.type == "cuda")


def per_process_batch(total: int, world: int, accum: int) -> int:
    per, rem = divmod(int(total), world * accum)
    if rem or per < 1:
        raise ConfigError(f"optim.total_batch_size={total} is not divisible by world size {world} "
                          f"x accum_iter {accum}")
    return per

