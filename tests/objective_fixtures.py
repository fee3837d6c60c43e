"""Tiny models and teachers shared by the objective tests (CPU, a few milliseconds each)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from maskalign.config import config_dir
from maskalign.models.vit import MaskedViT
from maskalign.results import DEFAULT_REFERENCE_DIR
from maskalign.teachers.base import IMAGENET_MEAN, IMAGENET_STD, Teacher, TeacherOutput

CONFIG_DIR = config_dir("pretrain")
SWEEP_DIR = config_dir("sweeps")
REFERENCE_DIR = DEFAULT_REFERENCE_DIR


def tiny_vit(seed: int = 0, img: int = 32, patch: int = 8, dim: int = 32, depth: int = 2,
             heads: int = 2) -> MaskedViT:
    torch.manual_seed(seed)
    return MaskedViT(img_size=img, patch_size=patch, embed_dim=dim, depth=depth, num_heads=heads)


def patch_by_hand(images: torch.Tensor, b: int, i: int, j: int, p: int) -> torch.Tensor:
    """Patch (i, j) of image b flattened as (row, col, channel), MAE's layout, with plain slicing."""
    block = images[b, :, i * p:(i + 1) * p, j * p:(j + 1) * p]  # (C, p, p)
    return block.permute(1, 2, 0).reshape(-1)


def norm_pix_by_hand(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    n = x.numel()
    mean = x.sum() / n
    var = ((x - mean) ** 2).sum() / (n - 1)
    return (x - mean) / torch.sqrt(var + eps)


def smooth_l1_by_hand(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    d = (a - b).abs()
    return torch.where(d < 1.0, 0.5 * d * d, d - 0.5).mean()


def layer_norm_by_hand(y: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    mean = y.mean(dim=-1, keepdim=True)
    var = ((y - mean) ** 2).mean(dim=-1, keepdim=True)
    return (y - mean) / torch.sqrt(var + eps)


class FakeTeacher(Teacher):
    """A frozen stand-in teacher: level ``i`` is a fixed random map of the patches, scaled by level.

    Its [CLS] attention is a softmax over a fixed score per patch position, so it is known exactly.
    """

    def __init__(self, dim: int = 24, depth: int = 3, patch: int = 8, num_patches: int = 16, seed: int = 1) -> None:
        super().__init__(IMAGENET_MEAN, IMAGENET_STD, None)
        g = torch.Generator().manual_seed(seed)
        self.dim, self.depth, self.label, self.patch = dim, depth, "Fake/8", patch
        self.proj = nn.Linear(3 * patch * patch, dim)
        with torch.no_grad():
            self.proj.weight.copy_(torch.randn(dim, 3 * patch * patch, generator=g) * 0.05)
            self.proj.bias.copy_(torch.randn(dim, generator=g))
        self.cls = nn.Parameter(torch.randn(1, 1, dim, generator=g))
        self.register_buffer("scores", torch.randn(num_patches, generator=g), persistent=False)
        self.freeze()

    def _run(self, x: torch.Tensor, levels: set[int], with_attn: bool) -> TeacherOutput:
        from maskalign.objectives.mae import patchify

        tokens = torch.cat([self.cls.expand(x.shape[0], -1, -1), self.proj(patchify(x, self.patch))], dim=1)
        hidden = {i: tokens * (i + 1) + 0.5 * i for i in levels}
        attn = self.scores.softmax(0).expand(x.shape[0], -1).contiguous() if with_attn else None
        return TeacherOutput(hidden=hidden, cls_attn=attn)


def export_random_teacher(out_dir: Path, depth: int = 3, dim: int = 32, img: int = 64, patch: int = 8) -> Path:
    """A randomly initialised timm ViT exported like this project's encoders (a ``local`` teacher)."""
    from maskalign.checkpoint import build_timm_vit, export_encoder

    torch.manual_seed(123)
    arch = {"img_size": img, "patch_size": patch, "embed_dim": dim, "depth": depth, "num_heads": 2, "mlp_ratio": 4.0}
    model = build_timm_vit(arch)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    return export_encoder(out_dir, state, {"arch": arch, "label": "RandViT/8"})
