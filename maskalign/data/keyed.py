"""Per-sample augmentation seeds: the crop of image ``i`` in epoch ``e`` is a function of (seed, e, i).

torchvision and timm transforms draw from the process's global RNGs, so by default an image's
augmentation depends on which DataLoader worker happened to load it, how many workers there are
and how many processes share the data set. Then a 2-process run cannot reproduce a 1-process run
at the same total batch, and changing ``data.num_workers`` changes the training curve.

Here the sampler hands the data set ``(epoch, index)`` keys instead of bare indices, and the data
set seeds torch's, Python's and NumPy's RNGs from the key around the transform (restoring them
afterwards, so the main process's own streams, e.g. the masks drawn with ``num_workers=0``, are
untouched). The distribution of augmentations is unchanged; only which random numbers an image
gets is pinned to the image. ``DistributedSampler``'s shards of one epoch put the same images into
each global batch as a single process takes (rank ``r`` takes every ``world``-th index of the same
permutation), so with keyed augmentation the global batches are identical across world sizes.

The GPU-decode path returns the key's seed with the encoded bytes (``KeyedDataset(...,
with_seed=True)``), and ``GpuAugment`` draws each image's crop and flip from it exactly as
torchvision's ``RandomResizedCrop`` + ``RandomHorizontalFlip`` would under that seed: both paths
give the same crop of the same image in the same epoch.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from itertools import islice
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

__all__ = ["EpochKeys", "KeyedDataset", "sample_seed", "seeded"]

_MASK63 = (1 << 63) - 1


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one image in one epoch (an odd-multiplier mix, so nearby keys differ)."""
    x = (int(seed) * 0x9E3779B97F4A7C15 + int(epoch) * 0xBF58476D1CE4E5B9 + int(index) * 0x94D049BB133111EB) & _MASK63
    x ^= x >> 31
    return (x * 0xD6E8FEB86659FD93) & _MASK63


class seeded:
    """Context: torch/Python/NumPy global RNGs seeded from ``seed`` inside, restored on exit."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def __enter__(self) -> None:
        self._torch = torch.get_rng_state()
        self._py = random.getstate()
        self._np = np.random.get_state()
        torch.manual_seed(self.seed)
        random.seed(self.seed)
        np.random.seed(self.seed % (2**32))

    def __exit__(self, *exc: object) -> None:
        torch.set_rng_state(self._torch)
        random.setstate(self._py)
        np.random.set_state(self._np)


class EpochKeys(Sampler[tuple[int, int]]):
    """Wraps an index sampler (``DistributedSampler``): yields ``(epoch, index)``; ``set_epoch`` passes on.

    The epoch travels with every key, so persistent DataLoader workers, which keep the copy of the
    data set made when they started, still seed each epoch differently.
    """

    def __init__(self, sampler: Sampler[int]) -> None:
        self.sampler = sampler
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Keys of ``epoch``, less its first ``skip`` indices (a run resumed mid-epoch has used them)."""
        self.epoch, self.skip = int(epoch), int(skip)
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        e = self.epoch
        return ((e, int(i)) for i in islice(self.sampler, self.skip, None))

    def __len__(self) -> int:
        return max(len(self.sampler) - self.skip, 0)  # type: ignore[arg-type]


class KeyedDataset(Dataset):
    """``dataset[index]`` under RNGs seeded from ``sample_seed(seed, epoch, index)``.

    Args:
        dataset: any map-style data set (its transform may use torch, ``random`` or NumPy).
        seed: the run's seed (the same on every rank).
        with_seed: append the sample's seed and index to the item (the GPU path augments later,
            from the seed, and names a file it cannot decode by the index's path).
    """

    def __init__(self, dataset: Dataset, seed: int, with_seed: bool = False) -> None:
        self.dataset, self.seed, self.with_seed = dataset, int(seed), with_seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> Any:
        # classes, samples, targets, root: the wrapped data set's (called only for missing names)
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, key: tuple[int, int] | int) -> Any:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        s = sample_seed(self.seed, epoch, index)
        with seeded(s):
            item = self.dataset[index]
        return (*item, s, index) if self.with_seed else item
