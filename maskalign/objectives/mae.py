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

Patch layout (``patchify``) is MAE's: within a patch, row, column, then channel.

The pixel helpers here (``patchify``, ``pixel_targets``) are shared by CrossMAE and LUT.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn
from timm.models.vision_transformer import Block

from maskalign.masking import num_visible, random_masking, visible_mask
from maskalign.models.pos_embed import sincos_2d
from maskalign.models.vit import MaskedViT
from maskalign.objectives.base import Objective, ObjectiveOutput


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, H/p * W/p, p*p*C), patches in raster order, each as (row, col, channel)."""
    b, c, h, w = images.shape
    p = patch_size
    if h % p or w % p:
        raise ValueError(f"image {h}x{w} is not a multiple of the patch size {p}")
    x = images.reshape(b, c, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // p) * (w // p), p * p * c)


def pixel_targets(images: torch.Tensor, patch_size: int, norm_pix: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """Per-patch pixel targets in float32; with ``norm_pix`` each patch gets zero mean and unit
    (unbiased) variance, as MAE's ``--norm_pix_loss``."""
    t = patchify(images.float(), patch_size)
    if norm_pix:
        mean = t.mean(dim=-1, keepdim=True)
        var = t.var(dim=-1, keepdim=True, unbiased=True)
        t = (t - mean) / (var + eps) ** 0.5
    return t


def init_decoder_weights(module: nn.Module) -> None:
    """MAE's init for everything outside the encoder: xavier-uniform Linear (bias 0), LN (1, 0)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class MAE(Objective):
    """Masked autoencoder with a self-attention pixel decoder.

    Args:
        encoder: the student ViT.
        mask_ratio: fraction of patches hidden from the encoder (0.75).
        decoder_dim, decoder_depth, decoder_heads: the decoder's width, blocks and heads.
        norm_pix_loss: normalise each target patch by its own mean and variance.
    """

    name = "mae"
    find_unused_parameters = False

    def __init__(self, encoder: MaskedViT, *, mask_ratio: float = 0.75, decoder_dim: int = 512,
                 decoder_depth: int = 8, decoder_heads: int = 16, mlp_ratio: float = 4.0,
                 norm_pix_loss: bool = True) -> None:
        super().__init__()
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"MAE needs a mask ratio in (0, 1), got {mask_ratio}")
        self.encoder = encoder
        self.mask_ratio, self.norm_pix_loss = mask_ratio, norm_pix_loss
        p = encoder.patch_size
        self.decoder_embed = nn.Linear(encoder.embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder_pos_embed = nn.Parameter(sincos_2d(decoder_dim, *encoder.grid), requires_grad=False)
        self.decoder_blocks = nn.ModuleList([
            Block(decoder_dim, decoder_heads, mlp_ratio, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6))
            for _ in range(decoder_depth)
        ])
        self.decoder_norm = nn.LayerNorm(decoder_dim, eps=1e-6)
        self.decoder_pred = nn.Linear(decoder_dim, p * p * 3)
        for m in (self.decoder_embed, self.decoder_blocks, self.decoder_norm, self.decoder_pred):
            init_decoder_weights(m)
        nn.init.normal_(self.mask_token, std=0.02)

    # --- what the tables and the engine read --------------------------------------------------
    @property
    def method_id(self) -> str:
        return self.name

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
