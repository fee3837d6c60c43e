"""``data.decode``: both paths crop the same image the same way, replace a corrupt file with a
warning, and the switch resolves (and refuses) as documented; run on CPU (the device path decodes
with libjpeg here, the same code nvJPEG runs on CUDA)."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from maskalign.config import ConfigError
from maskalign.data.decode import (
    DeviceRecipe,
    build_loader,
    cpu_images_per_s,
    resolve_decode,
    starves,
    step_images_per_s,
)
from maskalign.data.imagenet import SafeImageFolder
from maskalign.data.keyed import KeyedDataset, sample_seed
from maskalign.data.transforms import pretrain_transform
from maskalign.teachers.base import IMAGENET_MEAN, IMAGENET_STD

CPU = torch.device("cpu")
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def _photo(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """Smooth colour fields with an asymmetric ramp, so a wrong crop or flip shows in the pixels."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    chans = [127 + 90 * np.sin(2 * np.pi * (rng.uniform(0.5, 2) * xx / w + rng.uniform(0.5, 2) * yy / h))
             + 30 * (xx / w) for _ in range(3)]
    return Image.fromarray(np.stack(chans, -1).clip(0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("decode_switch")
    rng = np.random.default_rng(0)
    sizes = [(96, 72), (80, 80), (64, 112), (120, 90), (100, 60), (72, 96), (88, 88), (110, 70)]
    for c in ("a", "b"):
        (root / c).mkdir()
        for i, (w, h) in enumerate(sizes):
            _photo(rng, w, h).save(root / c / f"{c}{i}.JPEG", quality=95)
    return root


def _epoch(loader, sampler, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
    sampler.set_epoch(epoch)
    xs, ys = zip(*list(loader))
    return torch.cat(xs), torch.cat(ys)


@pytest.mark.parametrize("epoch", [0, 3])
def test_same_image_same_crop_same_pixels_on_both_paths(folder: Path, epoch: int) -> None:
    """The engine's two loaders over one folder: same images in the same order, and each image's
    crop and flip drawn from its own seed, so the pixels agree to a few grey levels."""
    ds = SafeImageFolder(folder, transform=pretrain_transform(40, 0.2))
    cpu_loader, cpu_sampler = build_loader(ds, 4, 0, 1, 7, 0, CPU, "cpu")
    gpu_loader, gpu_sampler = build_loader(ds, 4, 0, 1, 7, 0, CPU, "gpu", DeviceRecipe(40, 0.2))
    x_cpu, y_cpu = _epoch(cpu_loader, cpu_sampler, epoch)
    x_gpu, y_gpu = _epoch(gpu_loader, gpu_sampler, epoch)
    assert torch.equal(y_cpu, y_gpu) and x_cpu.shape == x_gpu.shape == (16, 3, 40, 40)
    levels = ((x_cpu - x_gpu) * STD * 255).abs()
    assert levels.mean() < 1.5, levels.mean()
    assert levels.amax(dim=(1, 2, 3)).max() < 30
    # Not trivially equal: other seeds give other crops, by far more than the tolerance.
    other, other_s = build_loader(ds, 4, 0, 1, 8, 0, CPU, "gpu", DeviceRecipe(40, 0.2))
    x_other, _ = _epoch(other, other_s, epoch)
    assert ((x_other - x_gpu) * STD * 255).abs().mean() > 8


def test_the_crop_is_torchvisions_under_the_images_seed(folder: Path) -> None:
    """Expected pixels from torchvision itself: RandomResizedCrop + flip on the PIL image with the
    global RNG seeded by the image's key, against the device path's output for that image."""
    ds = SafeImageFolder(folder)
    loader, sampler = build_loader(ds, 16, 0, 1, 3, 0, CPU, "gpu", DeviceRecipe(32, 0.2))
    sampler.set_epoch(2)
    order = [i for _, i in sampler]
    x, _ = next(iter(loader))
    ref_t = T.Compose([T.RandomResizedCrop(32, scale=(0.2, 1.0), interpolation=T.InterpolationMode.BICUBIC),
                       T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    for row, idx in enumerate(order[:6]):
        torch.manual_seed(sample_seed(3, 2, idx))
        ref = ref_t(Image.open(ds.samples[idx][0]).convert("RGB"))
        assert ((x[row] - ref) * STD[0] * 255).abs().mean() < 1.5


def test_keyed_augmentation_leaves_the_callers_rng_alone(folder: Path) -> None:
    ds = KeyedDataset(SafeImageFolder(folder, transform=pretrain_transform(24)), seed=0)
    torch.manual_seed(11)
    before = torch.get_rng_state()
    a = ds[(1, 5)][0]
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(a, ds[(1, 5)][0]) and not torch.equal(a, ds[(2, 5)][0])


@pytest.mark.parametrize("decode", ["cpu", "gpu"])
def test_corrupt_file_is_replaced_with_a_warning(tmp_path: Path, folder: Path, decode: str) -> None:
    root = tmp_path / "data"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for p in sorted((folder / c).iterdir())[:4]:
            (root / c / p.name).write_bytes(p.read_bytes())
    bad = root / "a" / "a1.JPEG"
    bad.write_bytes(b"\xff\xd8\xff\x00 not a jpeg")
    ds = SafeImageFolder(root, transform=pretrain_transform(24))
    loader, sampler = build_loader(ds, 4, 0, 1, 0, 0, CPU, decode, DeviceRecipe(24, 0.2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        x, y = _epoch(loader, sampler, 0)
    assert x.shape == (8, 3, 24, 24) and torch.isfinite(x).all() and len(y) == 8
    msgs = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert any("skipping unreadable image" in m and str(bad) in m for m in msgs), msgs


def test_gpu_without_cuda_says_so_in_one_line_and_decodes_on_the_cpu() -> None:
    lines: list[str] = []
    assert resolve_decode("gpu", CPU, DeviceRecipe(32, 0.2), log=lines.append) == "cpu"
    assert len(lines) == 1 and "no CUDA device" in lines[0]
    assert resolve_decode("auto", CPU, DeviceRecipe(32, 0.2), log=lines.append) == "cpu"
    assert resolve_decode("cpu", torch.device("cuda"), DeviceRecipe(32, 0.2), log=lines.append) == "cpu"
    with pytest.raises(ConfigError, match="data.decode: unknown 'nvjpeg'"):
        resolve_decode("nvjpeg", CPU, None)


def test_auto_on_cuda_measures_and_logs_its_choice() -> None:
    """The decision, with the two rates stubbed (the device object needs no GPU to exist)."""
    cuda, lines = torch.device("cuda"), []
    recipe = DeviceRecipe(224, 0.2)
    assert resolve_decode("auto", cuda, recipe, measure=lambda: (2400.0, 5000.0), log=lines.append) == "gpu"
    assert resolve_decode("auto", cuda, recipe, measure=lambda: (9000.0, 5000.0), log=lines.append) == "cpu"
    assert "auto: gpu (CPU path 2400 images/s" in lines[0] and "step 5000" in lines[0]
    assert starves(1000, 900) and not starves(1200, 900)  # 1.2x headroom
    assert resolve_decode("auto", cuda, None, "RandAugment works on PIL images", log=lines.append) == "cpu"
    assert "RandAugment" in lines[-1]
    with pytest.raises(ConfigError, match="data.decode=gpu: RandAugment"):
        resolve_decode("gpu", cuda, None, "RandAugment works on PIL images")


def test_measurements_leave_the_model_as_it_was(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                                torch.nn.LazyLinear(2))
    model(torch.zeros(2, 3, 16, 16))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(5)
    rng = torch.get_rng_state()
    rate = step_images_per_s(model, 4, 16, CPU, lambda: torch.autocast("cpu", enabled=False), iters=2)
    assert rate > 0 and torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert all(p.grad is None for p in model.parameters())
    ds = SafeImageFolder(folder, transform=pretrain_transform(24))
    # one second per measured interval (a clock of our own, not this machine's load): the CPU
    # path's rate is n images per second on one core, times the workers
    import maskalign.data.decode as decode

    ticks = iter(range(1000))
    monkeypatch.setattr(decode.time, "perf_counter", lambda: float(next(ticks)))
    assert cpu_images_per_s(ds, workers=3, n=4) == 3 * cpu_images_per_s(ds, workers=1, n=4) == 12.0
    assert cpu_images_per_s(ds, workers=0, n=4) == 4.0  # the main process alone


def test_classification_recipes_know_their_device_version() -> None:
    from omegaconf import OmegaConf

    from maskalign.transfer.data import finetune_train_transform, linprobe_train_transform

    assert linprobe_train_transform(32).device_recipe == DeviceRecipe(32, 0.08)
    aug = OmegaConf.create({"scale_min": 0.08, "color_jitter": None, "auto_augment": "rand-m9-mstd0.5-inc1",
                            "reprob": 0.25, "remode": "pixel", "recount": 1})
    assert "RandAugment" in finetune_train_transform(32, aug).device_unavailable
    aug.auto_augment = None
    assert finetune_train_transform(32, aug).device_recipe == DeviceRecipe(32, 0.08, 0.25, "pixel", 1)


def test_random_erasing_runs_on_the_device_batch(folder: Path) -> None:
    ds = SafeImageFolder(folder)
    loader, sampler = build_loader(ds, 8, 0, 1, 0, 0, CPU, "gpu", DeviceRecipe(32, 0.08, reprob=1.0))
    x, _ = _epoch(loader, sampler, 0)
    plain, plain_s = build_loader(ds, 8, 0, 1, 0, 0, CPU, "gpu", DeviceRecipe(32, 0.08))
    x0, _ = _epoch(plain, plain_s, 0)
    erased = (x != x0).any(dim=1)  # (B, H, W): where erasing replaced the pixels
    frac = erased.float().mean(dim=(1, 2))
    assert (frac > 0.015).all() and (frac < 0.45).all()  # timm's area range (0.02, 1/3), per image


def test_png_named_jpeg_takes_the_fallback_on_the_device_path(tmp_path: Path) -> None:
    root = tmp_path / "d" / "c"
    root.mkdir(parents=True)
    for i in range(4):
        buf = io.BytesIO()
        Image.fromarray(np.full((30, 40, 3), 60 * i, np.uint8)).save(buf, "PNG" if i == 2 else "JPEG")
        (root / f"{i}.JPEG").write_bytes(buf.getvalue())
    ds = SafeImageFolder(tmp_path / "d")
    loader, sampler = build_loader(ds, 4, 0, 1, 0, 0, CPU, "gpu", DeviceRecipe(16, 1.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # nothing is skipped
        x, _ = _epoch(loader, sampler, 0)
    grey = (x * STD + torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) * 255
    assert sorted(round(v) for v in grey.mean(dim=(1, 2, 3)).tolist()) == [0, 60, 120, 180]


def test_classification_loader_takes_the_marked_device_path(folder: Path) -> None:
    """``classification_sets`` marks the train set; ``train_loader`` then yields device batches."""
    from maskalign.distributed import DistInfo
    from maskalign.transfer.data import train_loader

    ds = SafeImageFolder(folder, transform=pretrain_transform(24, 0.08))
    ds.decode, ds.device_recipe = "gpu", DeviceRecipe(24, 0.08)
    loader, sampler = train_loader(ds, 4, DistInfo(), seed=0, num_workers=0)
    sampler.set_epoch(0)
    batches = list(loader)
    assert len(batches) == len(loader) == 4 and loader.batch_size == 4
    assert all(x.shape == (4, 3, 24, 24) and y.dtype == torch.long for x, y in batches)


@pytest.mark.slow
def test_pretraining_asked_for_gpu_decoding_without_cuda(tmp_path: Path, full_demo_teacher: Path, capsys) -> None:
    from conftest import pretrain_cfg

    from maskalign.engine.pretrain import train

    train(pretrain_cfg(tmp_path, "name=dec", "data.num_workers=0", "optim.epochs=1", "runtime.max_steps=1",
                       "data.decode=gpu"))
    out = capsys.readouterr().out
    assert out.count("data.decode=gpu: no CUDA device here, decoding on the CPU instead") == 1
