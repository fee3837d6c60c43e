"""The device augmentation at the transfer recipes' crop scale (0.08), image by image against the CPU path.

The CPU path is torchvision's ``RandomResizedCrop(scale=(0.08, 1))`` + flip under each image's key
seed; the device path (run here on the CPU) must crop the same box of the same image, so the two
batches agree to the few grey levels by which PIL's and torch's bicubic kernels differ. A device
path that crops at the pre-training default (0.2) or any other scale draws other boxes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from transfer_helpers import mini_imagenet

from maskalign.data.decode import build_loader
from maskalign.data.imagenet import image_folder
from maskalign.teachers.base import IMAGENET_STD

SIZE = 32


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, tiny_demo_imagenet: Path) -> Path:
    return mini_imagenet(tiny_demo_imagenet, tmp_path_factory.mktemp("gpu_scale") / "imagenet", train=3, val=1)


def _batches(dataset, decode: str, recipe, epoch: int) -> list[torch.Tensor]:
    loader, sampler = build_loader(dataset, 6, rank=0, world=1, seed=5, num_workers=0, device=torch.device("cpu"),
                                   decode=decode, recipe=recipe)
    sampler.set_epoch(epoch)
    return [x for x, _ in loader]


def _levels(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((a - b) * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255).abs()


def test_linprobe_recipe_crops_the_same_boxes_on_both_paths(root: Path) -> None:
    from maskalign.transfer.data import linprobe_train_transform

    t = linprobe_train_transform(SIZE)
    assert t.transforms[0].scale == (0.08, 1.0)  # the CPU path: MAE's linear-probe crop
    ds = image_folder(root, "train", t)
    for epoch in (0, 1):
        cpu = torch.cat(_batches(ds, "cpu", t.device_recipe, epoch))
        dev = torch.cat(_batches(ds, "gpu", t.device_recipe, epoch))
        assert cpu.shape == dev.shape == (len(ds) // 6 * 6, 3, SIZE, SIZE)
        diff = _levels(dev, cpu)
        per_image = diff.mean(dim=(1, 2, 3))
        assert per_image.max() < 3.0, per_image  # each image: the same crop (and flip)
        assert diff.mean() < 1.5, diff.mean()


def test_finetune_device_recipe_crops_at_timms_scale(root: Path) -> None:
    """Without RandAugment the fine-tune recipe may decode on the device: its crop scale is timm's CPU one."""
    from maskalign.data.decode import DeviceAugmentLoader
    from maskalign.transfer.data import finetune_train_transform

    aug = OmegaConf.create({"scale_min": 0.08, "color_jitter": None, "auto_augment": None, "reprob": 0.0,
                            "remode": "pixel", "recount": 1})
    t = finetune_train_transform(SIZE, aug)
    cpu_scale = tuple(t.transforms[0].scale)  # timm's RandomResizedCropAndInterpolation
    assert cpu_scale == (0.08, 1.0)
    ds = image_folder(root, "train", t)
    loader, _ = build_loader(ds, 6, 0, 1, 5, 0, torch.device("cpu"), "gpu", t.device_recipe)
    assert isinstance(loader, DeviceAugmentLoader)
    assert tuple(loader.augment.scale) == cpu_scale and loader.augment.img_size == SIZE
