"""The GPU-decode data path (run here on CPU) matches the CPU path: shapes, labels, crop sampling,
pixel values of the same crop, and the output distribution under random augmentation."""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from maskalign.data.gpu_decode import GpuAugment, JpegFolder, collate_bytes, sample_crop, unpack_bytes
from maskalign.data.transforms import pretrain_transform
from maskalign.teachers.base import IMAGENET_MEAN, IMAGENET_STD


def _smooth_image(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """Low-frequency colour fields (JPEG-friendly, so both decoders agree closely)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    chans = []
    for _ in range(3):
        fx, fy, ph = rng.uniform(0.5, 3.0), rng.uniform(0.5, 3.0), rng.uniform(0, 2 * np.pi)
        chans.append(127 + 100 * np.sin(2 * np.pi * (fx * xx / w + fy * yy / h) + ph))
    return Image.fromarray(np.stack(chans, -1).clip(0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("jpegs")
    rng = np.random.default_rng(0)
    sizes = [(96, 72), (80, 80), (64, 112), (120, 90), (100, 60), (72, 96)]
    for c in ("n001", "n002"):
        (root / c).mkdir()
        for i, (w, h) in enumerate(sizes):
            _smooth_image(rng, w, h).save(root / c / f"{c}_{i}.JPEG", quality=95)
    return root


def test_dataset_bytes_and_labels(folder):
    from torchvision.datasets import ImageFolder

    ds = JpegFolder(folder)
    ref = ImageFolder(str(folder))
    assert len(ds) == len(ref) == 12
    assert [s[1] for s in ds.samples] == [s[1] for s in ref.samples]
    data, label = ds[7]
    assert data.dtype == torch.uint8 and data.dim() == 1 and label == ref.samples[7][1]
    batch = collate_bytes([ds[i] for i in range(5)])
    files = unpack_bytes(batch[0])
    assert len(files) == 5 and batch[1].shape == (5,)
    for i, f in enumerate(files):
        assert torch.equal(f, ds[i][0])


def test_workers_deliver_packed_batches(folder):
    """Through DataLoader workers (one shared-memory block per batch) into the augmentation."""
    from torch.utils.data import DataLoader

    ds = JpegFolder(folder)
    loader = DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate_bytes)
    aug = GpuAugment(16, device="cpu")
    n = 0
    for data, labels in loader:
        x = aug(data)
        assert x.shape == (len(labels), 3, 16, 16)
        n += len(labels)
    assert n == len(ds)


def test_output_shape_dtype_device(folder):
    ds = JpegFolder(folder)
    data, _ = collate_bytes([ds[i] for i in range(6)])
    aug = GpuAugment(32, device="cpu")
    x = aug(data)
    assert x.shape == (6, 3, 32, 32) and x.dtype == torch.float32 and x.device.type == "cpu"
    assert torch.isfinite(x).all()
    lo = (0 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    hi = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert (x.amin(dim=(0, 2, 3)) >= lo - 1e-5).all() and (x.amax(dim=(0, 2, 3)) <= hi + 1e-5).all()
    x_cl = GpuAugment(32, device="cpu", channels_last=True)(data)
    assert x_cl.is_contiguous(memory_format=torch.channels_last)


def test_crop_sampling_matches_torchvision_ranges():
    g = torch.Generator().manual_seed(0)
    areas, aspects = [], []
    for _ in range(2000):
        top, left, h, w = sample_crop(300, 400, (0.2, 1.0), (3 / 4, 4 / 3), g)
        assert 0 <= top and top + h <= 300 and 0 <= left and left + w <= 400
        areas.append(h * w / (300 * 400))
        aspects.append(w / h)
    # The same statistics from torchvision's own sampler.
    torch.manual_seed(0)
    ref_a, ref_r = [], []
    for _ in range(2000):
        _, _, h, w = T.RandomResizedCrop.get_params(torch.empty(3, 300, 400), (0.2, 1.0), (3 / 4, 4 / 3))
        ref_a.append(h * w / (300 * 400))
        ref_r.append(w / h)
    assert min(areas) >= 0.19 and max(areas) <= 1.0
    assert abs(np.mean(areas) - np.mean(ref_a)) < 0.02
    assert abs(np.mean(np.log(aspects)) - np.mean(np.log(ref_r))) < 0.02
    assert abs(np.std(np.log(aspects)) - np.std(np.log(ref_r))) < 0.02
    # Fallback: a very wide image gets the centred crop with the ratio clamped.
    g = torch.Generator().manual_seed(1)
    top, left, h, w = sample_crop(10, 1000, (0.99, 1.0), (3 / 4, 4 / 3), g)
    assert (h, w) == (10, round(10 * 4 / 3)) and left == (1000 - w) // 2


@pytest.mark.parametrize("uint8_resize", [True, False])  # False: the float resampling used on CUDA
def test_same_crop_same_pixels_as_cpu_path(folder, uint8_resize):
    """With the crop forced to the whole image and no flip, both paths are a resize of the decoded
    image; they agree to a few grey levels (PIL's and torch's bicubic kernels differ slightly)."""
    ds = JpegFolder(folder)
    paths = [s[0] for s in ds.samples[:6]]
    data, _ = collate_bytes([ds[i] for i in range(6)])
    aug = GpuAugment(48, scale=(1.0, 1.0), ratio=(1e-3, 1e3), hflip=0.0, device="cpu", uint8_resize=uint8_resize)
    aug_out = aug(data)
    cpu = T.Compose([T.Resize((48, 48), interpolation=T.InterpolationMode.BICUBIC), T.ToTensor(),
                     T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    ref = torch.stack([cpu(Image.open(p).convert("RGB")) for p in paths])
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    diff_levels = ((aug_out - ref) * std * 255).abs()  # in 0..255 grey levels
    assert diff_levels.mean() < 1.5, diff_levels.mean()
    assert diff_levels.max() < 25, diff_levels.max()


@pytest.mark.parametrize("uint8_resize", [True, False])
def test_distribution_matches_cpu_path(folder, uint8_resize):
    """Random augmentation of the same images: per-channel mean and std agree, flips about half."""
    ds = JpegFolder(folder)
    paths = [s[0] for s in ds.samples]
    data, _ = collate_bytes([ds[i] for i in range(len(ds))])
    torch.manual_seed(0)
    aug = GpuAugment(32, device="cpu", uint8_resize=uint8_resize)
    gpu = torch.cat([aug(data) for _ in range(12)])
    cpu_t = pretrain_transform(32)
    imgs = [Image.open(p).convert("RGB") for p in paths]
    cpu = torch.stack([cpu_t(im) for _ in range(12) for im in imgs])
    assert gpu.shape == cpu.shape
    for stat in (lambda x: x.mean(dim=(0, 2, 3)), lambda x: x.std(dim=(0, 2, 3))):
        torch.testing.assert_close(stat(gpu), stat(cpu), atol=0.08, rtol=0.0)
    # Spatial statistics too: the mean image's left-right profile (crops + flips) is alike.
    prof_g, prof_c = gpu.mean(dim=(0, 1, 2)), cpu.mean(dim=(0, 1, 2))
    assert (prof_g - prof_c).abs().max() < 0.15


def test_flip_probability():
    """An image dark on the left, bright on the right: the left half is brighter after a flip."""
    arr = np.zeros((64, 64, 3), np.uint8)
    arr[:, 32:] = 255
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=95)
    data = [torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)] * 400
    g = torch.Generator().manual_seed(0)
    x = GpuAugment(16, scale=(1.0, 1.0), ratio=(1.0, 1.0), device="cpu", generator=g)(data)
    flipped = (x[:, :, :, :8].mean(dim=(1, 2, 3)) > x[:, :, :, 8:].mean(dim=(1, 2, 3))).float().mean()
    assert abs(flipped.item() - 0.5) < 0.08
    none = GpuAugment(16, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0, device="cpu")(data[:10])
    assert (none[:, :, :, :8].mean() < none[:, :, :, 8:].mean()).item()


def test_png_and_broken_files(folder):
    """A PNG named .JPEG decodes through the fallback; an undecodable file is replaced, with a warning."""
    ds = JpegFolder(folder)
    good, _ = ds[0]
    buf = io.BytesIO()
    Image.fromarray(np.full((40, 50, 3), 200, np.uint8)).save(buf, "PNG")
    png = torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)
    broken = torch.tensor([0xFF, 0xD8, 0xFF, 0x00, 0x12], dtype=torch.uint8)
    aug = GpuAugment(24, device="cpu")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        x = aug([good, png, broken])
    assert x.shape == (3, 3, 24, 24) and torch.isfinite(x).all()
    assert any("unreadable image batch position 2" in str(m.message) for m in w)


def test_cuda_required_when_asked():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available")
    with pytest.raises(RuntimeError, match="CUDA"):
        GpuAugment(32, device="cuda")


def test_generator_reproducible(folder):
    ds = JpegFolder(folder)
    data, _ = collate_bytes([ds[i] for i in range(4)])
    a = GpuAugment(20, device="cpu", generator=torch.Generator().manual_seed(5))(data)
    b = GpuAugment(20, device="cpu", generator=torch.Generator().manual_seed(5))(data)
    assert torch.equal(a, b)
    assert not math.isnan(a.sum().item())
