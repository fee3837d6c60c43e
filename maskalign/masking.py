"""Which patches the student sees: random or attentive masking, at any ratio including 0.

Both return the indices of the visible patches, shape (B, n_keep) with
``n_keep = int(N * (1 - ratio))`` as in the official code (196 patches at 70% -> 58 visible).

Attentive masking follows the official MaskAlign code, not a top-k reading of the paper: the last
teacher block's [CLS]->patch attention, averaged over heads, is used as a sampling distribution,
and visible patches are drawn in proportion to it without replacement (``torch.multinomial``).
Deterministic top-k is kept as an option for ablations.
"""

from __future__ import annotations

import torch


def num_visible(num_patches: int, mask_ratio: float) -> int:
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask ratio must be in [0, 1), got {mask_ratio}")
    return int(num_patches * (1 - mask_ratio))


def random_masking(batch: int, num_patches: int, mask_ratio: float, *, device: torch.device | str = "cpu",
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform sampling without replacement: the first ``n_keep`` of a random permutation."""
    n_keep = num_visible(num_patches, mask_ratio)
    noise = torch.rand(batch, num_patches, device=device, generator=generator)
    return noise.argsort(dim=1)[:, :n_keep]


def attentive_masking(cls_attn: torch.Tensor, mask_ratio: float, *, deterministic: bool = False,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Keep patches with probability proportional to ``cls_attn`` (B, N), without replacement.

    ``deterministic=True`` keeps the ``n_keep`` most attended patches instead.
    """
    b, n = cls_attn.shape
    n_keep = num_visible(n, mask_ratio)
    weights = cls_attn.float().clamp_min(0)
    if deterministic:
        return weights.topk(n_keep, dim=1).indices
    if n_keep == n:
        # Everything is kept; a permutation would only cost a sort.
        return torch.arange(n, device=cls_attn.device).expand(b, n).contiguous()
    # Rows of exact zeros (possible in low precision) would make multinomial fail; a tiny floor
    # keeps every patch drawable without changing the distribution measurably.
    weights = weights + 1e-12
    # ``torch.multinomial(weights, n_keep, replacement=False)`` computed the way its own kernel does
    # (top-k of w / Exp(1), the Gumbel-top-k trick), which gives the same indices for the same RNG
    # state, minus multinomial's two validity checks that read values back to the host: on CUDA
    # those were a device sync inside every training step.
    q = torch.empty_like(weights).exponential_(1, generator=generator)
    return torch.topk(weights / q, n_keep, dim=1).indices


def visible_mask(keep_idx: torch.Tensor, num_patches: int) -> torch.Tensor:
    """Boolean (B, N): True where the patch is visible."""
    m = torch.zeros(keep_idx.shape[0], num_patches, dtype=torch.bool, device=keep_idx.device)
    return m.scatter_(1, keep_idx, True)
