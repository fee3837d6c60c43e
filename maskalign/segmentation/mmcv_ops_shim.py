"""Pure-PyTorch stand-ins for the few ``mmcv.ops`` names that mmsegmentation imports.

mmsegmentation 1.2.2 needs ``mmcv>=2.0.0rc4,<2.2``. The only build of that range on PyPI that
installs without a compiler is ``mmcv-lite``, which has no compiled ``mmcv._ext`` and therefore no
working ``mmcv.ops``. ``import mmseg.models`` then fails on five names. The UperNet + ViT recipe
calls none of them, but the import must succeed, so this module provides:

* ``point_sample``: bilinear sampling at normalised points, exact in PyTorch (``grid_sample``);
* ``sigmoid_focal_loss``: the per-element focal loss, exact in PyTorch;
* ``CrissCrossAttention``, ``PSAMask``, ``DeformConv2d``, ``ModulatedDeformConv2d``: compiled
  kernels with no stand-in; building one raises :class:`CompiledOpMissing`, which names the op
  and the opt-in full-mmcv build (``docs/ade20k.md``).

:func:`install` puts this module in ``sys.modules['mmcv.ops']``, and only when the compiled
``mmcv._ext`` cannot be found, so a real mmcv build always wins.
"""

from __future__ import annotations

import importlib.util
import sys
import types

import torch
import torch.nn.functional as F
from torch import nn

from maskalign.errors import UserError

FULL_MMCV_HINT = ("it needs the compiled mmcv 2.1.0 (mmcv-lite has no mmcv.ops); "
                  "see docs/ade20k.md, 'Opt-in: the full mmcv build'")


class CompiledOpMissing(UserError):
    """A model asked for an ``mmcv.ops`` kernel that only the compiled mmcv provides."""


def compiled_ops_available() -> bool:
    """True when a compiled ``mmcv._ext`` is importable (a full mmcv build)."""
    try:
        return importlib.util.find_spec("mmcv._ext") is not None
    except (ImportError, ValueError):
        return False


def point_sample(input: torch.Tensor, points: torch.Tensor, align_corners: bool = False,
                 **kwargs) -> torch.Tensor:
    """Sample ``input`` (N, C, H, W) at ``points`` in [0, 1] x [0, 1] (x first).

    ``points`` is (N, P, 2) or (N, Hp, Wp, 2); the result is (N, C, P) or (N, C, Hp, Wp), as in
    mmcv. Extra keyword arguments go to ``grid_sample`` (``mode``, ``padding_mode``).
    """
    flat = points.dim() == 3
    grid = points.unsqueeze(2) if flat else points
    out = F.grid_sample(input, 2.0 * grid - 1.0, align_corners=align_corners, **kwargs)
    return out.squeeze(3) if flat else out


def sigmoid_focal_loss(input: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, alpha: float = 0.25,
                       weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Sigmoid focal loss of logits (N, C) against class indices (N,), as mmcv's kernel computes it.

    A target equal to C (or any index outside 0..C-1) is background: every class is a negative.
    ``weight`` (C,) scales each sample's row by the weight of its target class. ``reduction`` is
    ``'none'`` (N, C), ``'sum'``, or ``'mean'`` (the sum divided by N).
    """
    if input.dim() != 2 or target.dim() != 1 or input.shape[0] != target.shape[0]:
        raise ValueError(f"sigmoid_focal_loss: expected (N, C) logits and (N,) targets, "
                         f"got {tuple(input.shape)} and {tuple(target.shape)}")
    n, c = input.shape
    valid = (target >= 0) & (target < c)
    onehot = torch.zeros_like(input)
    onehot[valid, target[valid]] = 1.0
    p = input.sigmoid()
    tiny = torch.finfo(input.dtype).tiny
    pos = -alpha * (1 - p).pow(gamma) * p.clamp_min(tiny).log()
    neg = -(1 - alpha) * p.pow(gamma) * (1 - p).clamp_min(tiny).log()
    loss = onehot * pos + (1 - onehot) * neg
    if weight is not None and weight.numel() > 0:
        row = torch.ones(n, dtype=input.dtype, device=input.device)
        row[valid] = weight.to(input.dtype)[target[valid]]
        loss = loss * row[:, None]
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.sum() / n
    raise ValueError(f"sigmoid_focal_loss: unknown reduction {reduction!r}")


def _missing(op: str) -> type:
    class _Missing(nn.Module):
        def __init__(self, *args, **kwargs) -> None:
            raise CompiledOpMissing(f"mmcv.ops.{op}: {FULL_MMCV_HINT}")

    _Missing.__name__ = _Missing.__qualname__ = op
    _Missing.__doc__ = f"Stand-in for the compiled ``mmcv.ops.{op}``: building it raises CompiledOpMissing."
    return _Missing


CrissCrossAttention = _missing("CrissCrossAttention")
PSAMask = _missing("PSAMask")
DeformConv2d = _missing("DeformConv2d")
ModulatedDeformConv2d = _missing("ModulatedDeformConv2d")

STAND_INS = ("point_sample", "sigmoid_focal_loss", "CrissCrossAttention", "PSAMask", "DeformConv2d",
             "ModulatedDeformConv2d")


def install() -> bool:
    """Register the stand-ins as ``mmcv.ops`` unless compiled ops exist; True if installed."""
    if compiled_ops_available():
        return False
    current = sys.modules.get("mmcv.ops")
    if current is not None and getattr(current, "__maskalign_stand_in__", False):
        return True
    import mmcv

    module = types.ModuleType("mmcv.ops", __doc__)
    module.__maskalign_stand_in__ = True
    module.__all__ = list(STAND_INS)
    for name in STAND_INS:
        setattr(module, name, globals()[name])
    sys.modules["mmcv.ops"] = module
    mmcv.ops = module
    return True
