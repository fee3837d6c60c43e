"""Classification metrics of the transfer protocols, apart from any loop so they can be checked by hand.

* top-k accuracy, optionally over a subset of the logits (ImageNet-A/-R score only their 200
  classes: ``output[:, indices]`` then argmax, as in the hendrycks ``eval.py`` scripts);
* ImageNet-C corruption errors: ``CE_c = 100 * mean_s(err_{c,s}) / ALEXNET_ERR[c]`` and
  ``mCE = mean_c CE_c`` over the 15 common corruptions (``google-research/augmix:imagenet.py``
  ``compute_mce``). AlexNet's errors are keyed by corruption *name*: a positional list silently
  pairs the wrong denominators as soon as someone reorders the corruptions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

# The 15 corruptions of the mCE, in the order of imagecorruptions.get_corruption_names('common').
# speckle_noise, gaussian_blur, spatter and saturate are the held-out extras, never in the mCE.
CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness",
    "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)

# AlexNet's top-1 error on each corruption, averaged over the 5 severities (a fraction).
# Source: google-research/augmix imagenet.py ALEXNET_ERR ("Raw AlexNet errors taken from
# https://github.com/hendrycks/robustness"), re-keyed by name.
ALEXNET_ERR: dict[str, float] = {
    "gaussian_noise": 0.886428, "shot_noise": 0.894468, "impulse_noise": 0.922640,
    "defocus_blur": 0.819880, "glass_blur": 0.826268, "motion_blur": 0.785948, "zoom_blur": 0.798360,
    "snow": 0.866816, "frost": 0.826572, "fog": 0.819324, "brightness": 0.564592,
    "contrast": 0.853204, "elastic_transform": 0.646056, "pixelate": 0.717840, "jpeg_compression": 0.606500,
}


def topk_correct(logits: torch.Tensor, target: torch.Tensor, ks: Sequence[int] = (1, 5),
                 indices: Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
    """Number of samples whose target is among the top-k logits, one count per ``k``.

    With ``indices`` only those logit columns compete and ``target`` indexes into them. ``k`` is
    capped at the number of competing classes (top-5 of a 3-class problem is top-3).
    """
    if indices is not None:
        idx = torch.as_tensor(indices, device=logits.device, dtype=torch.long)
        logits = logits.index_select(1, idx)
    kmax = min(max(ks), logits.shape[1])
    pred = logits.topk(kmax, dim=1).indices  # (N, kmax)
    hit = pred.eq(target.view(-1, 1))
    return torch.stack([hit[:, :min(k, kmax)].any(dim=1).sum() for k in ks])


def corruption_error(errors: Sequence[float], corruption: str) -> float:
    """CE of one corruption: 100 x its mean error over the severities / AlexNet's (both fractions)."""
    if corruption not in ALEXNET_ERR:
        raise KeyError(f"{corruption!r} is not one of the 15 mCE corruptions")
    if len(errors) != len(SEVERITIES):
        raise ValueError(f"{corruption}: need one error per severity 1..5, got {len(errors)}")
    return 100.0 * (sum(errors) / len(errors)) / ALEXNET_ERR[corruption]


def corruption_errors(errors: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """CE of every corruption present in ``errors`` (name -> five errors), in canonical order."""
    unknown = sorted(set(errors) - set(ALEXNET_ERR))
    if unknown:
        raise KeyError(f"not mCE corruptions: {unknown}")
    return {c: corruption_error(errors[c], c) for c in CORRUPTIONS if c in errors}


def mean_corruption_error(ce: Mapping[str, float]) -> float:
    """mCE over the 15 corruptions; NaN unless every one of them has a CE."""
    if any(c not in ce or not math.isfinite(ce[c]) for c in CORRUPTIONS):
        return float("nan")
    return sum(ce[c] for c in CORRUPTIONS) / len(CORRUPTIONS)
