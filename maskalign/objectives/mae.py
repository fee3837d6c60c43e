"""MAE (He et al., CVPR 2022): reconstruct the pixels of the masked patches from the visible ones.

As in ``facebookresearch/mae`` ``models_mae.py``:

* the encoder (the shared :class:`MaskedViT`) sees ``int(N(1-r))`` randomly chosen patches plus
  [CLS], then its final LayerNorm;
* a light decoder: ``decoder_embed`` Linear, a learnable mask token filling the masked positions
  (the visible tokens go back to their raster positions), a fixed 2-D sin-cos decoder position
  embedding, ``depth`` self-attention blocks (8 x 512-d, 16 heads for ViT-B), LayerNorm, and a
  Linear to ``p*p*3`` pixel values per patch; the [CLS] output is dropped;
* targets are the patches of the input tensor as given (ImageNet-normalised), each patch
  normalised by its own mean and unbiased variance (eps 1e-6) with ``norm_pix_loss``;
* the loss is the per-patch MSE averaged over the masked patches only.

Patch layout (``patchify``) is MAE's: within a patch, row, column, then channel. The pixel
helpers and the decoder parts MAE shares with CrossMAE live in :mod:`maskalign.objectives.pixels`.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
import torch.nn as nn
from timm.models.vision_transformer import Block

from maskalign.masking import num_visible, random_masking, visible_mask
from maskalign.models.vit import MaskedViT
from maskalign.objectives.base import Objective, ObjectiveOutput
from maskalign.objectives.pixels import add_pixel_decoder, check_decoder, check_pixel_method, patchify, pixel_targets
from maskalign.objectives.registry import build_student, register_objective

__all__ = ["MAE", "patchify", "pixel_targets"]


@register_objective("mae")
class MAE(Objective):
    """Masked autoencoder with a self-attention pixel decoder.

    Args:
        encoder: the student ViT.
        mask_ratio: fraction of patches hidden from the encoder (0.75).
        decoder_dim, decoder_depth, decoder_heads: the decoder's width, blocks and heads.
        norm_pix_loss: normalise each target patch by its own mean and variance.
    """

    label = "MAE"
    recipes = {"mae": "mae_vitb16_1600ep"}

    def __init__(self, encoder: MaskedViT, *, mask_ratio: float = 0.75, decoder_dim: int = 512,
                 decoder_depth: int = 8, decoder_heads: int = 16, mlp_ratio: float = 4.0,
                 norm_pix_loss: bool = True) -> None:
        super().__init__()
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"MAE needs a mask ratio in (0, 1), got {mask_ratio}")
        self.encoder = encoder
        self.mask_ratio, self.norm_pix_loss = mask_ratio, norm_pix_loss
        self.decoder_embed = nn.Linear(encoder.embed_dim, decoder_dim)
        blocks = nn.ModuleList([
            Block(decoder_dim, decoder_heads, mlp_ratio, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6))
            for _ in range(decoder_depth)
        ])
        add_pixel_decoder(self, encoder, decoder_dim, blocks, init_first=[self.decoder_embed])

    # --- built from a config -----------------------------------------------------------------
    @classmethod
    def check_config(cls, cfg: Any) -> None:
        check_pixel_method(cfg)
        check_decoder("mae", cfg.mae)

    @classmethod
    def from_config(cls, cfg: Any) -> MAE:
        m = cfg.mae
        return cls(build_student(cfg), mask_ratio=cfg.mask.ratio, decoder_dim=m.decoder_dim,
                   decoder_depth=m.decoder_depth, decoder_heads=m.decoder_heads, norm_pix_loss=m.norm_pix_loss)

    # --- what the tables and the engine read --------------------------------------------------
    @property
    def num_keep(self) -> int:
        return num_visible(self.encoder.num_patches, self.mask_ratio)

    @property
    def forward_ratio(self) -> float:
        return self.num_keep / self.encoder.num_patches

    @property
    def reconstruct_ratio(self) -> float:
        return (self.encoder.num_patches - self.num_keep) / self.encoder.num_patches

    @property
    def supervision(self) -> str:
        return "RGB"

    # --- pieces ------------------------------------------------------------------------------
    def choose_visible(self, batch: int, device: torch.device) -> torch.Tensor:
        return random_masking(batch, self.encoder.num_patches, self.mask_ratio, device=device)

    def decode(self, latent: torch.Tensor, keep_idx: torch.Tensor) -> torch.Tensor:
        """Encoder output (B, 1+n, D) of the visible patches ``keep_idx`` -> pixels (B, N, p*p*3)."""
        x = self.decoder_embed(latent)
        b, n, d = x.shape[0], self.encoder.num_patches, x.shape[-1]
        full = self.mask_token.to(x.dtype).expand(b, n, d)
        full = full.scatter(1, keep_idx.unsqueeze(-1).expand(-1, -1, d), x[:, 1:])
        x = torch.cat([x[:, :1], full], dim=1) + self.decoder_pos_embed.to(x.dtype)
        for blk in self.decoder_blocks:
            x = blk(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]

    def masked_pixel_loss(self, images: torch.Tensor, pred: torch.Tensor, keep_idx: torch.Tensor) -> torch.Tensor:
        """Per-patch MSE against the (normalised) pixels, averaged over the masked patches."""
        target = pixel_targets(images, self.encoder.patch_size, self.norm_pix_loss)
        per_patch = (pred.float() - target).pow(2).mean(dim=-1)
        masked = (~visible_mask(keep_idx, self.encoder.num_patches)).float()
        return (per_patch * masked).sum() / masked.sum()

    def forward(self, images: torch.Tensor) -> ObjectiveOutput:
        keep = self.choose_visible(images.shape[0], images.device)
        latent = self.encoder(images, keep)
        loss = self.masked_pixel_loss(images, self.decode(latent, keep), keep)
        return ObjectiveOutput(loss, {"mae_loss": loss.detach()})
