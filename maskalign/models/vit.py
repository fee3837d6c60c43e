"""The student ViT: timm blocks over visible tokens only, returning every block's output.

Parameter names equal timm's ``VisionTransformer`` (``cls_token``, ``pos_embed``,
``patch_embed.proj``, ``blocks.N.*``, ``norm``), so the exported encoder loads into timm, and
from there into detectron2's and mmsegmentation's ViTs, by key renaming alone.

As in the official MaskAlign and MAE code: the position embedding is a fixed 2-D sin-cos table
with a zero [CLS] row; [CLS] is appended after masking; initialisation is xavier-uniform for
linear layers and the flattened patch projection, normal(0.02) for [CLS].
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn as nn
from timm.layers import PatchEmbed
from timm.models.vision_transformer import Block

from maskalign.models.init import init_linear_and_norm
from maskalign.models.pos_embed import sincos_2d


@dataclass(frozen=True)
class ViTArch:
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0


ARCHS: dict[str, ViTArch] = {
    # The demo world's student: small enough to pre-train for a few minutes on 2 CPU cores.
    "vit_tiny_demo": ViTArch(embed_dim=96, depth=6, num_heads=3),
    "vit_tiny": ViTArch(embed_dim=192, depth=12, num_heads=3),
    "vit_small": ViTArch(embed_dim=384, depth=12, num_heads=6),
    "vit_base": ViTArch(embed_dim=768, depth=12, num_heads=12),
    "vit_large": ViTArch(embed_dim=1024, depth=24, num_heads=16),
}


class MaskedViT(nn.Module):
    """A plain ViT whose forward takes the indices of the visible patches.

    Args:
        img_size: input resolution (square).
        patch_size: patch side in pixels.
        embed_dim, depth, num_heads, mlp_ratio: the usual ViT sizes.
        drop_path_rate: stochastic depth, linearly increasing over the blocks.
    """

    def __init__(self, img_size: int = 224, patch_size: int = 16, embed_dim: int = 768, depth: int = 12,
                 num_heads: int = 12, mlp_ratio: float = 4.0, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.img_size, self.patch_size = img_size, patch_size
        self.embed_dim, self.depth, self.num_heads, self.mlp_ratio = embed_dim, depth, num_heads, mlp_ratio
        self.patch_embed = PatchEmbed(img_size=img_size, patch_size=patch_size, in_chans=3, embed_dim=embed_dim)
        self.grid = self.patch_embed.grid_size
        self.num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        # A Parameter (not a buffer) so that it is saved under timm's key name; it is never trained.
        self.pos_embed = nn.Parameter(sincos_2d(embed_dim, *self.grid), requires_grad=False)
        dpr = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.ModuleList([
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, drop_path=dpr[i],
                  norm_layer=partial(nn.LayerNorm, eps=1e-6))
            for i in range(depth)
        ])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self._init_weights()

    def _init_weights(self) -> None:
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)
        init_linear_and_norm(self)

    def arch(self) -> dict[str, float | int]:
        """The constructor arguments a loader needs to rebuild this encoder."""
        return {"img_size": self.img_size, "patch_size": self.patch_size, "embed_dim": self.embed_dim,
                "depth": self.depth, "num_heads": self.num_heads, "mlp_ratio": self.mlp_ratio}

    def embed(self, images: torch.Tensor, keep_idx: torch.Tensor | None = None) -> torch.Tensor:
        """Patch tokens with position, restricted to ``keep_idx`` (B, n), then [CLS] in front."""
        x = self.patch_embed(images) + self.pos_embed[:, 1:]
        if keep_idx is not None:
            x = torch.gather(x, 1, keep_idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        return torch.cat([cls, x], dim=1)

    def forward_blocks(self, images: torch.Tensor, keep_idx: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Every block's output, before the final norm: ``depth`` tensors of shape (B, 1+n, D)."""
        x = self.embed(images, keep_idx)
        outs = []
        for blk in self.blocks:
            x = blk(x)
            outs.append(x)
        return outs

    def forward(self, images: torch.Tensor, keep_idx: torch.Tensor | None = None) -> torch.Tensor:
        """The final-normed token sequence (B, 1+n, D)."""
        return self.norm(self.forward_blocks(images, keep_idx)[-1])


def build_vit(arch: str, img_size: int, patch_size: int, drop_path_rate: float = 0.0) -> MaskedViT:
    if arch not in ARCHS:
        raise ValueError(f"unknown student arch {arch!r}; known: {', '.join(ARCHS)}")
    a = ARCHS[arch]
    return MaskedViT(img_size=img_size, patch_size=patch_size, embed_dim=a.embed_dim, depth=a.depth,
                     num_heads=a.num_heads, mlp_ratio=a.mlp_ratio, drop_path_rate=drop_path_rate)
