"""JPEG decoding and the pre-training augmentation on the GPU, so the CPU never starves the step.

The CPU path (``pretrain_transform``: PIL decode, RandomResizedCrop(scale=(0.2, 1), bicubic),
horizontal flip, ToTensor, Normalize) costs a few milliseconds of one core per ImageNet image; a
ViT-B step on an H100 consumes thousands of images per second. This path splits the work:

* ``JpegFolder``: a dataset in the ImageFolder layout that only reads the file's bytes
  (``torchvision.io.read_file``): cheap for DataLoader workers.
* ``collate_bytes``: a batch is the files' bytes packed into one 1-D uint8 tensor plus their
  lengths (one shared-memory block per batch from a worker, not one per file: many small tensors
  run a worker out of file descriptors), and the labels.
* ``GpuAugment``: decodes the whole batch at once (``torchvision.io.decode_jpeg(list, device=...)``,
  nvJPEG on CUDA), then per image a random resized crop (the same sampling as torchvision's
  ``RandomResizedCrop``), a bicubic antialiased resize, a random horizontal flip, and the ImageNet
  normalisation of the stacked batch. On CPU it runs the same code (decoding with libjpeg), which is
  how it is tested without a GPU.

Files that nvJPEG cannot decode (CMYK or progressive JPEGs on some versions, PNGs named .JPEG:
ImageNet has a few) are decoded one by one on the CPU and moved to the device; a file that nothing
can decode is reported once by path and replaced by another image of the same batch.

Random numbers come from the global CPU RNG (or ``generator``), never from the device, so sampling
the crops costs no host-device synchronisation and checkpoints that save the RNG state resume the
same augmentation. Given per-image seeds (``maskalign.data.keyed``: the engine's path), each image's
crop and flip are drawn exactly as torchvision's ``RandomResizedCrop`` and ``RandomHorizontalFlip``
draw them under that seed, so the CPU and GPU paths crop the same image the same way.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from maskalign.teachers.base import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["GpuAugment", "JpegFolder", "collate_bytes", "collate_keyed_bytes", "sample_crop", "unpack_bytes"]


class JpegFolder(Dataset):
    """``<root>/<class>/<image>`` files as raw bytes: ``(uint8 tensor of the file, label)``.

    Classes and order are those of torchvision's ``ImageFolder`` (sorted class folders), so labels
    equal the CPU path's.
    """

    def __init__(self, root: str | Path, extensions: Sequence[str] = (".jpg", ".jpeg", ".png")) -> None:
        from torchvision.datasets.folder import find_classes, make_dataset

        self.root = Path(root)
        if not self.root.is_dir():
            from maskalign.data.imagenet import DataError

            raise DataError(f"data folder not found: {self.root}")
        self.classes, self.class_to_idx = find_classes(str(self.root))
        self.samples = make_dataset(str(self.root), self.class_to_idx, extensions=tuple(extensions))
        self.targets = [s[1] for s in self.samples]

    @classmethod
    def like(cls, folder: Dataset) -> JpegFolder:
        """The same files, classes and order as an ``ImageFolder`` (the CPU path's data set)."""
        self = cls.__new__(cls)
        self.root = Path(folder.root)  # type: ignore[attr-defined]
        self.classes, self.class_to_idx = list(folder.classes), dict(folder.class_to_idx)  # type: ignore[attr-defined]
        self.samples = list(folder.samples)  # type: ignore[attr-defined]
        self.targets = [s[1] for s in self.samples]
        return self

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except OSError:
            raw = b""  # decoding reports it (by name) and replaces it, as the CPU path skips it
        return torch.frombuffer(bytearray(raw), dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8), label


def collate_bytes(batch: list[tuple[torch.Tensor, int]]) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``((packed bytes, lengths), labels)``: files differ in length, so they are concatenated."""
    data = [b[0] for b in batch]
    lengths = torch.tensor([d.numel() for d in data], dtype=torch.long)
    return (torch.cat(data), lengths), torch.tensor([b[1] for b in batch], dtype=torch.long)


def collate_keyed_bytes(batch: list[tuple[torch.Tensor, int, int, int]]
                        ) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor]:
    """As ``collate_bytes`` for ``(bytes, label, seed, index)`` items (``KeyedDataset(...,
    with_seed=True)``): ``((packed, lengths), labels, seeds, indices)``."""
    data, labels = collate_bytes([(b[0], b[1]) for b in batch])
    return (data, labels, torch.tensor([b[2] for b in batch], dtype=torch.long),
            torch.tensor([b[3] for b in batch], dtype=torch.long))


def unpack_bytes(data: tuple[torch.Tensor, torch.Tensor] | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The list of encoded files from ``collate_bytes``'s packing (a list passes through)."""
    if isinstance(data, tuple) and len(data) == 2 and torch.is_tensor(data[0]) and data[0].dim() == 1 \
            and torch.is_tensor(data[1]) and data[1].dtype == torch.long:
        flat, lengths = data
        return list(torch.split(flat, lengths.tolist()))
    return list(data)


def sample_crop(height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float],
                generator: torch.Generator | None = None) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` as torchvision's ``RandomResizedCrop.get_params`` draws it: ten tries
    at a random area fraction in ``scale`` and log-uniform aspect ratio in ``ratio``, else the
    largest centred crop whose aspect ratio is clamped into ``ratio``."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    u = torch.rand(10, 4, generator=generator).tolist()
    for a, r, y, x in u:
        target_area = area * (scale[0] + (scale[1] - scale[0]) * a)
        aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * r)
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = min(int(y * (height - h + 1)), height - h)
            left = min(int(x * (width - w + 1)), width - w)
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        h, w = height, round(height * max(ratio))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class GpuAugment:
    """Batch transform: encoded JPEGs -> normalised ``(B, 3, S, S)`` float32 on ``device``.

    Args:
        img_size: output side ``S``.
        scale, ratio: RandomResizedCrop's area-fraction and aspect-ratio ranges.
        hflip: probability of a horizontal flip.
        mean, std: normalisation (ImageNet's, as the CPU path).
        device: where to decode and augment ("cuda", "cuda:1", "cpu").
        channels_last: return the batch in channels-last memory format (faster convolutions).
        generator: CPU generator for the crop/flip draws (default: the global RNG).
        uint8_resize: resample in uint8 (torch's fast CPU kernel) rather than float; default: on CPU.
    """

    def __init__(self, img_size: int, scale: tuple[float, float] = (0.2, 1.0),
                 ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0), hflip: float = 0.5,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 device: str | torch.device = "cuda", channels_last: bool = False,
                 generator: torch.Generator | None = None, uint8_resize: bool | None = None) -> None:
        self.img_size, self.scale, self.ratio, self.hflip = img_size, tuple(scale), tuple(ratio), hflip
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("GPU decoding needs CUDA, which is not available here; use CPU decoding")
        self.channels_last, self.generator = channels_last, generator
        self.uint8_resize = self.device.type == "cpu" if uint8_resize is None else uint8_resize
        # Folded normalisation: x/255 -> (x/255 - mean)/std == x * a + b.
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self._a = (1.0 / (255.0 * std_t)).to(self.device)
        self._b = (-mean_t / std_t).to(self.device)
        self._warned: set[int | str] = set()

    # --- decoding ----------------------------------------------------------------------------
    def decode(self, data: list[torch.Tensor], names: Sequence[str] | None = None) -> list[torch.Tensor | None]:
        """Encoded files -> uint8 ``(3, H, W)`` on the device (``None`` where nothing decodes).

        ``names`` (the files' paths) make the warning about an undecodable file name it."""
        from torchvision.io import ImageReadMode, decode_image, decode_jpeg

        try:
            if all(d.numel() for d in data):
                return list(decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device))
        except (RuntimeError, ValueError):
            pass  # one bad file fails the whole batched call: go one by one
        images: list[torch.Tensor | None] = []
        for i, d in enumerate(data):
            img = None
            try:
                img = decode_jpeg(d, mode=ImageReadMode.RGB, device=self.device)
            except (RuntimeError, ValueError):
                try:
                    img = decode_image(d, mode=ImageReadMode.RGB).to(self.device, non_blocking=True)
                except (RuntimeError, ValueError) as e:
                    what = names[i] if names is not None else f"batch position {i}"
                    if what not in self._warned:
                        reason = str(e).splitlines()[0] if d.numel() else "empty or unreadable file"
                        warnings.warn(f"skipping unreadable image {what}: {reason}", RuntimeWarning, stacklevel=2)
                        self._warned.add(what)
            images.append(img)
        return images

    # --- augmentation ------------------------------------------------------------------------
    def keyed_params(self, img: torch.Tensor, seed: int) -> tuple[tuple[int, int, int, int], bool]:
        """``((top, left, h, w), flip)`` as torchvision's ``RandomResizedCrop`` then
        ``RandomHorizontalFlip`` draw them from the global RNG seeded with ``seed`` (the CPU path
        under ``KeyedDataset``)."""
        from torchvision.transforms import RandomResizedCrop

        from maskalign.data.keyed import seeded

        with seeded(seed):
            box = RandomResizedCrop.get_params(img, list(self.scale), list(self.ratio))
            flip = bool(torch.rand(1) < self.hflip)
        return tuple(int(v) for v in box), flip  # type: ignore[return-value]

    def crop_resize(self, img: torch.Tensor, flip: bool,
                    box: tuple[int, int, int, int] | None = None) -> torch.Tensor:
        """One image: random resized crop to ``S x S`` (bicubic, antialiased), optional flip;
        ``box`` = ``(top, left, h, w)`` fixes the crop instead of sampling it."""
        _, h, w = img.shape
        top, left, ch, cw = box if box is not None else sample_crop(h, w, self.scale, self.ratio, self.generator)
        x = img[None, :, top:top + ch, left:left + cw]
        size = (self.img_size, self.img_size)
        if self.uint8_resize:
            # torch's uint8 resampling kernel (the one torchvision's tensor transforms use): ~3x
            # faster than float on CPU, and uint8 out like PIL's.
            x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True).float()
        else:
            x = F.interpolate(x.float(), size=size, mode="bicubic", align_corners=False, antialias=True)
            x = x.clamp_(0.0, 255.0).round_()  # PIL's resize returns uint8: clamp and round the same way
        return x.flip(-1) if flip else x

    def __call__(self, data: tuple[torch.Tensor, torch.Tensor] | Sequence[torch.Tensor],
                 seeds: torch.Tensor | Sequence[int] | None = None,
                 names: Sequence[str] | None = None) -> torch.Tensor:
        """``data``: ``collate_bytes``'s packed batch, or a list of encoded files; ``seeds``: one
        per image (crop and flip as the CPU path draws them under that seed); ``names``: the
        files' paths, for warnings."""
        decoded = self.decode(unpack_bytes(data), names)
        good = [i for i, im in enumerate(decoded) if im is not None]
        if not good:
            raise RuntimeError("GPU decoding: no image of the batch could be decoded")
        if seeds is None:
            flips = (torch.rand(len(decoded), generator=self.generator) < self.hflip).tolist()
        else:
            seeds = seeds.tolist() if torch.is_tensor(seeds) else list(seeds)
        out = []
        for i, im in enumerate(decoded):
            if im is None:
                im = decoded[good[i % len(good)]]  # stand-in keeps the batch size
            if seeds is None:
                out.append(self.crop_resize(im, flips[i]))
            else:
                box, flip = self.keyed_params(im, int(seeds[i]))
                out.append(self.crop_resize(im, flip, box))
        x = torch.cat(out) * self._a + self._b
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
