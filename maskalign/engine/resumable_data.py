"""Training data that can resume in the middle of an epoch and still give the same batches.

Two pieces, so that a run stopped after iteration ``k`` of an epoch (a preemption) continues with
exactly the batches, crops and flips an uninterrupted run would have drawn, without loading the
``k`` batches it already used:

* ``SeededSamples`` draws each sample's augmentation from a seed of its own, ``(run seed, epoch,
  index)``, under a forked RNG: the random crop of image ``i`` in epoch ``e`` no longer depends on
  which DataLoader worker loads it, how many samples that worker loaded before, or whether the
  epoch was interrupted. (It also makes ``data.num_workers`` irrelevant to the results.)
* ``SkippingSampler`` wraps the epoch's sampler and leaves out the first ``skip`` indices.

The loop sets both to the epoch (``set_epoch``) before it creates the epoch's iterator.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one sample of one epoch, well mixed (``numpy.random.SeedSequence``)."""
    words = np.random.SeedSequence([seed % 2**32, epoch, index]).generate_state(2, dtype=np.uint32)
    return int(words[0]) << 31 | int(words[1]) >> 1


class SeededSamples(Dataset):
    """``dataset[i]`` with torch's, Python's and NumPy's RNGs seeded by ``sample_seed(seed, epoch, i)``;
    the caller's RNG states are untouched."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed, self.epoch = dataset, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        s = sample_seed(self.seed, self.epoch, int(index))
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s)
            random.seed(s)
            np.random.seed(s % 2**32)
            try:
                return self.dataset[index]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)

    def __getattr__(self, name: str) -> Any:  # classes, samples, ... of the wrapped dataset
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)


class SkippingSampler(Sampler[int]):
    """``sampler`` without its first ``skip`` indices (set per epoch; 0 = the whole epoch)."""

    def __init__(self, sampler: Sampler[int]) -> None:
        self.sampler, self.skip = sampler, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        self.skip = int(skip)

    def __iter__(self) -> Iterator[int]:
        it = iter(self.sampler)
        for _ in range(self.skip):
            next(it, None)
        return it

    def __len__(self) -> int:
        return max(len(self.sampler) - self.skip, 0)  # type: ignore[arg-type]
