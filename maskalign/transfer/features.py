"""Frozen features of any family's encoder, and the on-disk cache that lets a re-run skip the forward.

The frozen-feature protocols (k-NN, the multi-head linear probe, the attentive probe) read one
forward of the frozen timm encoder (:mod:`maskalign.encoders`):

* :func:`pooled` -- the feature DINO's k-NN reads: the [CLS] token after the final norm, or the
  family's pooled feature (mean of the patch tokens + ``fc_norm``) where the model has no [CLS];
  it is timm's ``forward_head(..., pre_logits=True)``, so every family pools its own way;
* :func:`block_tokens` -- the last ``n`` blocks' outputs, each after the final norm (DINOv2's
  ``get_intermediate_layers(n, norm=True)``), split into prefix tokens ([CLS], registers) and
  patch tokens; one forward gives them all (timm's ``forward_intermediates``).

:func:`extract` runs a loader once through the encoder and keeps the features on the device;
:class:`FeatureCache` stores them in the run folder, keyed by what determines them (encoder file
and hash, image size, transform, the list of images), so a second k or a re-run costs no forward.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from maskalign.amp import autocast
from maskalign.atomic import atomic_torch_save
from maskalign.checkpoint import CheckpointError, load_file


@dataclass
class BlockTokens:
    """One block's output after the final norm: ``prefix`` (B, P, D) -- [CLS] first, then registers
    (P may be 0) -- and ``patches`` (B, N, D)."""

    prefix: torch.Tensor
    patches: torch.Tensor

    @property
    def cls(self) -> torch.Tensor:
        """The [CLS] token; the mean patch token for a family without one."""
        return self.prefix[:, 0] if self.prefix.shape[1] else self.patches.mean(dim=1)


def frozen_encoder(source: Any, img_size: int, device: torch.device) -> nn.Module:
    """The source encoder (a ``PretrainedEncoder``) at ``img_size``, frozen, in eval mode, on ``device``."""
    model = source.model
    if int(img_size) != int(source.arch["img_size"]):  # position table resampled the family's way
        model, _, _ = source.loaded.build(img_size)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.to(device).eval()


def num_prefix(model: nn.Module) -> int:
    return int(getattr(model, "num_prefix_tokens", 1))


def has_cls(model: nn.Module) -> bool:
    return getattr(model, "cls_token", None) is not None


def pooled(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """(B, D): the family's pooled feature ([CLS] after the final norm, or avg-pool + fc_norm)."""
    return model.forward_head(model.forward_features(images), pre_logits=True)  # type: ignore[operator]


def block_tokens(model: nn.Module, images: torch.Tensor, n_last: int) -> list[BlockTokens]:
    """The last ``n_last`` blocks' outputs, each after the final norm, oldest first; one forward."""
    p = num_prefix(model)
    _, inter = model.forward_intermediates(  # type: ignore[operator]
        images, indices=n_last, norm=True, return_prefix_tokens=p > 0, output_fmt="NLC")
    if p == 0:  # timm's prefix split fails without prefix tokens: the patches are the whole sequence
        return [BlockTokens(t[:, :0], t) for t in inter]
    return [BlockTokens(pre, tok) for tok, pre in inter]


def _gather(feats: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    """Every process's rows put back in data-set order (``ShardSampler`` shards are interleaved)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        out = torch.empty((n, *feats.shape[1:]), dtype=feats.dtype, device=feats.device)
        out[index] = feats
        return out
    world = dist.get_world_size()
    sizes = [torch.zeros((), dtype=torch.long, device=feats.device) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor(len(index), device=feats.device))
    most = int(max(s.item() for s in sizes))
    pad_f = torch.zeros((most, *feats.shape[1:]), dtype=feats.dtype, device=feats.device)
    pad_i = torch.full((most,), -1, dtype=torch.long, device=feats.device)
    pad_f[: len(index)], pad_i[: len(index)] = feats, index
    all_f = [torch.empty_like(pad_f) for _ in range(world)]
    all_i = [torch.empty_like(pad_i) for _ in range(world)]
    dist.all_gather(all_f, pad_f)
    dist.all_gather(all_i, pad_i)
    f, i = torch.cat(all_f), torch.cat(all_i)
    keep = i >= 0
    out = torch.empty((n, *feats.shape[1:]), dtype=feats.dtype, device=feats.device)
    out[i[keep]] = f[keep]
    return out


@torch.no_grad()
def extract(model: nn.Module, loader: DataLoader, device: torch.device, amp: str = "auto",
            feature: Callable[[nn.Module, torch.Tensor], torch.Tensor] = pooled) -> tuple[torch.Tensor, torch.Tensor]:
    """``(features (N, D) float32, labels (N,))`` of the whole data set, on ``device``, in data-set order.

    Each process encodes its shard of ``loader`` (a ``ShardSampler``); the shards are gathered so
    every process holds the full bank.
    """
    model.eval()
    sampler = loader.sampler
    order = torch.as_tensor(list(iter(sampler)), dtype=torch.long, device=device)
    feats, labels, seen = [], [], 0
    for images, target in loader:
        images = images.to(device, non_blocking=True)
        with autocast(device, amp):
            f = feature(model, images)
        feats.append(f.float())
        labels.append(target.to(device))
        seen += len(target)
    n = len(loader.dataset)  # type: ignore[arg-type]
    index = order[:seen]
    width = feats[0].shape[1:] if feats else ()
    f_all = torch.cat(feats) if feats else torch.zeros((0, *width), device=device)
    y_all = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long, device=device)
    return _gather(f_all, index, n), _gather(y_all, index, n)


def cache_key(**parts: Any) -> str:
    """A short digest of what determines the features (JSON of ``parts``, sorted)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class FeatureCache:
    """``<run folder>/features/<split>.pt``: the features of one split, reused when the key matches.

    A cached file whose key differs (another encoder, size, transform or image list) is
    recomputed and replaced, never silently reused.
    """

    def __init__(self, folder: Path, key: str) -> None:
        self.folder, self.key = Path(folder) / "features", key

    def path(self, split: str) -> Path:
        return self.folder / f"{split}.pt"

    def load(self, split: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor] | None:
        path = self.path(split)
        if not path.is_file():
            return None
        try:
            obj = load_file(path)
        except CheckpointError:  # a truncated or foreign file: recomputed and replaced
            return None
        if not isinstance(obj, dict) or obj.get("key") != self.key:
            return None
        return obj["features"].to(device), obj["labels"].to(device)

    def save(self, split: str, features: torch.Tensor, labels: torch.Tensor) -> Path:
        return atomic_torch_save({"key": self.key, "features": features.cpu(), "labels": labels.cpu()},
                                 self.path(split))

    def get(self, split: str, device: torch.device, compute: Callable[[], tuple[torch.Tensor, torch.Tensor]],
            write: bool = True) -> tuple[tuple[torch.Tensor, torch.Tensor], bool]:
        """(features, labels) from the cache, else computed (and saved when ``write``); and whether cached."""
        hit = self.load(split, device)
        if hit is not None:
            return hit, True
        out = compute()
        if write:
            self.save(split, *out)
        return out, False
