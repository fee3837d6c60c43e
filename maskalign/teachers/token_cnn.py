"""A convolutional network that thinks in tokens: the demo world's teacher architecture.

The paper's teachers are ViTs (CLIP, DINO) trained on hundreds of millions of images. The demo
world can afford a few CPU-minutes, and a small ViT trained from scratch in that budget stays near
chance on the demo shapes (measured: 17-24% top-1 on 10 classes after 500-2800 steps, with or
without a conv stem, dense labels or colour normalisation), because it must discover locality from
data. A CNN has locality built in and reaches about 60% in the same minute. So the demo teacher is a
CNN whose feature maps live on the *student's token grid*:

* a stem of stride-2 convolutions takes the image to one cell per ``patch_size`` patch;
* ``depth`` residual blocks keep that grid; each block's output, flattened, is one teacher level
  of ``(N, embed_dim)`` tokens, as a ViT block's output is;
* an attention-pooling head (one learned query over the last level's tokens) classifies; its
  weights are the teacher's "[CLS] attention" that attentive masking samples from, and the
  [CLS] slot of every level is that level's tokens pooled with those weights.

The teacher interface (:class:`maskalign.teachers.base.Teacher`) is the same as for CLIP: per-level
``(B, 1 + N, D)`` features of the intact image and a ``(B, N)`` attention over patches.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from maskalign.teachers.base import IMAGENET_MEAN, IMAGENET_STD, Teacher, TeacherOutput

KIND = "token_cnn"


class _ResBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(dim)
        self.conv2 = nn.Conv2d(dim, dim, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x + self.bn2(self.conv2(F.gelu(self.bn1(self.conv1(x))))))


class TokenCNN(nn.Module):
    """Stem to the patch grid, residual blocks on it, attention pooling; dense and [CLS] heads.

    Args:
        arch: ``{"kind": "token_cnn", "img_size", "patch_size" (a power of two), "embed_dim", "depth"}``.
        num_classes: classes of the image head; the patch head has one more (background).
    """

    def __init__(self, arch: dict[str, Any], num_classes: int) -> None:
        super().__init__()
        patch, dim = int(arch["patch_size"]), int(arch["embed_dim"])
        stages = int(round(math.log2(patch)))
        if 2 ** stages != patch:
            raise ValueError(f"token_cnn: patch_size must be a power of two, got {patch}")
        widths = [max(16, dim // 2 ** (stages - 1 - i)) for i in range(stages)]
        layers: list[nn.Module] = []
        cin = 3
        for w in widths:
            layers += [nn.Conv2d(cin, w, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(w), nn.GELU()]
            cin = w
        self.stem = nn.Sequential(*layers)
        self.blocks = nn.ModuleList(_ResBlock(dim) for _ in range(int(arch["depth"])))
        self.pool_query = nn.Parameter(torch.zeros(dim))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        self.patch_head = nn.Linear(dim, num_classes + 1)
        self.embed_dim, self.depth = dim, len(self.blocks)

    def levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every block's output as ``(B, N, D)`` tokens, row-major over the patch grid."""
        x = self.stem(x)
        out = []
        for blk in self.blocks:
            x = blk(x)
            out.append(x.flatten(2).transpose(1, 2))
        return out

    def pool_weights(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, N)`` softmax weights of the pooling query over the tokens."""
        return (tokens @ self.pool_query / self.embed_dim ** 0.5).softmax(dim=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Image logits ``(B, C)`` and patch logits ``(B, N, C + 1)``."""
        tokens = self.levels(x)[-1]
        pooled = (self.pool_weights(tokens).unsqueeze(-1) * tokens).sum(1)
        return self.head(self.norm(pooled)), self.patch_head(tokens)


class TokenCNNTeacher(Teacher):
    """A frozen :class:`TokenCNN` behind the teacher interface (ImageNet normalisation)."""

    def __init__(self, model: TokenCNN, label: str, input_size: int | None = None) -> None:
        super().__init__(IMAGENET_MEAN, IMAGENET_STD, input_size)
        self.model, self.label = model, label
        self.dim, self.depth = model.embed_dim, model.depth
        self.freeze()

    def _run(self, x: torch.Tensor, levels: set[int], with_attn: bool) -> TeacherOutput:
        feats = self.model.levels(x)
        weights = self.model.pool_weights(feats[-1])
        hidden = {}
        for i in levels:
            cls = (weights.unsqueeze(-1) * feats[i]).sum(1, keepdim=True)
            hidden[i] = torch.cat([cls, feats[i]], dim=1)
        return TeacherOutput(hidden=hidden, cls_attn=weights if with_attn else None)

