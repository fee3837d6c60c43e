"""AdamW with the MAE-family weight-decay groups, and the lr rule and schedule of the recipes."""

from __future__ import annotations

import math

import torch
import torch.nn as nn


def param_groups(model: nn.Module, weight_decay: float, skip: set[str] = frozenset()) -> list[dict]:
    """No decay for biases, 1-D tensors (norms) and the names in ``skip``; frozen tensors left out.

    The position embedding is frozen (sin-cos), so it never reaches the optimizer at all.
    """
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or name.endswith(".bias") or name in skip:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def build_adamw(groups: list[dict], lr: float, betas: tuple[float, float], device: torch.device) -> torch.optim.AdamW:
    # The fused kernel is one launch per step on CUDA; on CPU the default (foreach) path is used.
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=device.type == "cuda")


def scaled_lr(blr: float, total_batch: int, rule: str = "linear") -> float:
    """``blr * batch / 256`` (MAE, MaskAlign, CrossMAE) or ``blr * sqrt(batch) / 4`` (LUT)."""
    if rule == "linear":
        return blr * total_batch / 256
    if rule == "sqrt":
        return blr * math.sqrt(total_batch) / 4
    raise ValueError(f"unknown lr rule {rule!r}; use linear or sqrt")


def cosine_lr(epoch: float, lr: float, min_lr: float, warmup_epochs: float, epochs: float) -> float:
    """Linear warm-up, then half-cycle cosine to ``min_lr``; ``epoch`` is fractional (per iteration)."""
    if epoch < warmup_epochs:
        return lr * epoch / warmup_epochs
    t = (epoch - warmup_epochs) / max(epochs - warmup_epochs, 1e-12)
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)
