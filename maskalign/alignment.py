"""Dynamic Alignment (MaskAlign, section 3.3, eq. 1) and the alignment loss (eq. 3).

Two forms of eq. (1) are provided:

* ``adaptor_position="after_mix"`` (default, the official code): the S student block outputs are
  mixed by a learnable matrix W into one sequence per aligned teacher level, then each level has
  its own adaptor: ``y_j = A_j(sum_i W[j, i] x_i)``.
* ``adaptor_position="before_mix"`` (the paper's text): one adaptor per student block, then mixed:
  ``y_j = sum_i W[j, i] A_i(x_i)``.

Only the top-K teacher levels are aligned, so W holds K rows (the official code keeps all T rows
but gives the others zero loss weight: they never receive a gradient, so dropping them changes
nothing). W starts at the matching rows of ``I + 0.01`` when student and teacher have the same
depth (official ``fusion_type=linear``) and at ``1/S`` otherwise (official ``sum``, the only form
that works for e.g. a 24-block student under a 12-block teacher). W takes no weight decay.

``align_type="layerwise"`` drops W: teacher level j is matched with one student block
(the same index when depths agree, proportionally deeper otherwise).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def make_adaptor(kind: str, in_dim: int, out_dim: int) -> nn.Module:
    if kind == "linear":
        return nn.Linear(in_dim, out_dim)
    if kind == "mlp":
        # The paper's 2-layer MLP ablation: hidden width = student width.
        return nn.Sequential(nn.Linear(in_dim, in_dim), nn.GELU(), nn.Linear(in_dim, out_dim))
    raise ValueError(f"unknown adaptor {kind!r}; use 'linear' or 'mlp'")


def aligned_levels(teacher_depth: int, top_k: int) -> list[int]:
    """0-based indices of the last ``top_k`` teacher blocks."""
    if not 1 <= top_k <= teacher_depth:
        raise ValueError(f"top_k={top_k} must be between 1 and the teacher depth {teacher_depth}")
    return list(range(teacher_depth - top_k, teacher_depth))


def layerwise_student_index(level: int, student_depth: int, teacher_depth: int) -> int:
    """The student block matched with teacher block ``level`` (both 0-based) without W."""
    return round((level + 1) * student_depth / teacher_depth) - 1


class DynamicAlignment(nn.Module):
    """Maps S student block outputs to K teacher-level predictions.

    Args:
        student_dim, student_depth: width and block count of the student.
        teacher_dim, teacher_depth: width and block count of the teacher.
        top_k: how many of the last teacher levels are aligned.
        align_type: "dynamic" (learnable W) or "layerwise" (fixed one-to-one matching).
        adaptor: "linear" or "mlp".
        adaptor_position: "after_mix" (official code) or "before_mix" (paper eq. 1).
    """

    def __init__(self, student_dim: int, student_depth: int, teacher_dim: int, teacher_depth: int,
                 top_k: int, align_type: str = "dynamic", adaptor: str = "linear",
                 adaptor_position: str = "after_mix") -> None:
        super().__init__()
        if align_type not in ("dynamic", "layerwise"):
            raise ValueError(f"unknown align_type {align_type!r}; use 'dynamic' or 'layerwise'")
        if adaptor_position not in ("after_mix", "before_mix"):
            raise ValueError(f"unknown adaptor_position {adaptor_position!r}")
        self.align_type, self.adaptor_position = align_type, adaptor_position
        self.levels = aligned_levels(teacher_depth, top_k)
        self.student_depth = student_depth
        n_adaptors = student_depth if adaptor_position == "before_mix" else top_k
        self.adaptors = nn.ModuleList(make_adaptor(adaptor, student_dim, teacher_dim) for _ in range(n_adaptors))
        for m in self.adaptors.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        if align_type == "dynamic":
            if student_depth == teacher_depth:
                init = (torch.eye(student_depth) + 0.01)[self.levels]
            else:
                init = torch.full((top_k, student_depth), 1.0 / student_depth)
            self.weight = nn.Parameter(init)
        else:
            self.weight = None
            self.student_index = [layerwise_student_index(t, student_depth, teacher_depth) for t in self.levels]

    def forward(self, student_blocks: list[torch.Tensor]) -> list[torch.Tensor]:
        if len(student_blocks) != self.student_depth:
            raise ValueError(f"expected {self.student_depth} student block outputs, got {len(student_blocks)}")
        if self.weight is None:
            if self.adaptor_position == "before_mix":
                return [self.adaptors[s](student_blocks[s]) for s in self.student_index]
            return [a(student_blocks[s]) for a, s in zip(self.adaptors, self.student_index)]
        if self.adaptor_position == "before_mix":
            stacked = torch.stack([a(x) for a, x in zip(self.adaptors, student_blocks)])
            mixed = torch.einsum("ks,sbnd->kbnd", self.weight.to(stacked.dtype), stacked)
            return list(mixed.unbind(0))
        stacked = torch.stack(student_blocks)
        mixed = torch.einsum("ks,sbnd->kbnd", self.weight.to(stacked.dtype), stacked)
        return [a(m) for a, m in zip(self.adaptors, mixed.unbind(0))]


def normalize_target(y: torch.Tensor, kind: str, eps: float = 1e-5) -> torch.Tensor:
    """Eq. (2): normalise one teacher level (B, N, D) into an alignment target.

    ``ln`` is LayerNorm per token without affine (the official ``whiten``); ``bn`` is the official
    code's ``(y - y.mean()) / sqrt(y.var() + 1e-6)``: one mean and one *unbiased* variance over the
    whole tensor, eps 1e-6 whatever ``eps`` says; ``batchnorm`` is per-channel batch statistics
    without affine, the paper's literal "BatchNorm"; ``none`` keeps raw features.
    """
    y = y.float()
    if kind == "ln":
        return F.layer_norm(y, y.shape[-1:], eps=eps)
    if kind == "bn":
        return (y - y.mean()) / torch.sqrt(y.var(unbiased=True) + 1e-6)
    if kind == "batchnorm":
        flat = y.reshape(-1, y.shape[-1])
        return ((y - flat.mean(0)) / torch.sqrt(flat.var(0, unbiased=False) + eps))
    if kind == "none":
        return y
    raise ValueError(f"unknown target norm {kind!r}; use ln, bn, batchnorm or none")


def alignment_loss(preds: list[torch.Tensor], targets: list[torch.Tensor]) -> torch.Tensor:
    """Eq. (3) with the official weighting: ``sum_j (1/K) * 2 * SmoothL1_mean(pred_j, target_j)``.

    The factor 2 is the official code's; with beta=1 it makes small errors count as plain MSE.
    """
    k = len(preds)
    return sum(2.0 * F.smooth_l1_loss(p.float(), t, beta=1.0) for p, t in zip(preds, targets)) / k
