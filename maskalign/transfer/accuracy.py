"""Top-1 / top-5 of a classifier over a data set, exact under data-parallel sharding.

Each process scores its shard (``ShardSampler``); the correct counts and sample counts are summed
across processes, so the result equals a single-process run. ``indices`` restricts the logits to
a class subset (ImageNet-A/-R).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

from maskalign.amp import autocast
from maskalign.transfer.metrics import topk_correct


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        t = t.clone()
        dist.all_reduce(t)
    return t


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device, amp: str = "auto",
             indices: Sequence[int] | None = None, progress: Any = None) -> dict[str, float]:
    """``{"top1", "top5", "loss", "n"}``: accuracies in percent, mean cross-entropy over the scored classes.

    Leaves the model in eval mode; training loops set their mode at every epoch start.
    """
    model.eval()
    idx = torch.as_tensor(list(indices), dtype=torch.long, device=device) if indices is not None else None
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # top1, top5, loss, n
    for images, target in loader:
        if progress is not None:
            progress.update()
        images = images.to(device, non_blocking=True)
        target = target.to(device, non_blocking=True)
        with autocast(device, amp):
            logits = model(images)
        logits = logits.float()
        if idx is not None:
            logits = logits.index_select(1, idx)
        hits = topk_correct(logits, target, (1, 5))
        loss = nn.functional.cross_entropy(logits, target, reduction="sum")
        sums += torch.stack([hits[0].double(), hits[1].double(), loss.double(),
                             torch.tensor(float(target.numel()), dtype=torch.float64, device=device)])
    sums = all_reduce_sum(sums)
    n = max(sums[3].item(), 1.0)
    return {"top1": 100.0 * sums[0].item() / n, "top5": 100.0 * sums[1].item() / n,
            "loss": sums[2].item() / n, "n": int(sums[3].item())}


class Tagged(Dataset):
    """A data set whose samples also carry a group id, so many small sets share one loader."""

    def __init__(self, dataset: Dataset, group: int) -> None:
        self.dataset, self.group = dataset, group

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int):
        x, y = self.dataset[i]
        return x, y, self.group


@torch.no_grad()
def evaluate_groups(model: nn.Module, loader: DataLoader, device: torch.device, n_groups: int,
                    amp: str = "auto", progress: Any = None) -> torch.Tensor:
    """Per-group ``[top-1 hits, top-5 hits, samples]`` (shape ``(n_groups, 3)``) over ``Tagged`` sets.

    One pass (and one set of loader workers) for, e.g., ImageNet-C's 75 corruption x severity
    folders, instead of 75 loader start-ups.
    """
    model.eval()
    counts = torch.zeros(n_groups, 3, dtype=torch.float64, device=device)
    for images, target, group in loader:
        if progress is not None:
            progress.update()
        images, target, group = images.to(device), target.to(device), group.to(device)
        with autocast(device, amp):
            logits = model(images)
        pred = logits.float().topk(min(5, logits.shape[1]), dim=1).indices
        hit = pred.eq(target.view(-1, 1))
        rows = torch.stack([hit[:, :1].any(1), hit.any(1), torch.ones_like(target, dtype=torch.bool)], 1)
        counts.index_add_(0, group, rows.double())
    return all_reduce_sum(counts)
