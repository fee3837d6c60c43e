"""What the pixel-reconstruction objectives (MAE, CrossMAE, LUT) share.

* ``patchify`` / ``pixel_targets``: MAE's patch layout (within a patch: row, column, channel) and
  its norm-pix targets (each patch normalised by its own mean and unbiased variance, eps 1e-6);
* ``add_pixel_decoder``: the decoder parts MAE and CrossMAE have in common, under MAE's parameter
  names (``mask_token``, ``decoder_pos_embed``, ``decoder_blocks``, ``decoder_norm``,
  ``decoder_pred``) and with MAE's initialisation;
* the config checks the three share: random masking, no teacher, a decoder that fits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from maskalign.config import ConfigError
from maskalign.models.init import init_linear_and_norm
from maskalign.models.pos_embed import sincos_2d
from maskalign.models.vit import MaskedViT


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


def add_pixel_decoder(owner: nn.Module, encoder: MaskedViT, decoder_dim: int, blocks: nn.ModuleList,
                      init_first: Sequence[nn.Module] = ()) -> None:
    """Give ``owner`` a mask token, fixed sin-cos decoder positions, ``blocks``, a final LayerNorm
    and a Linear to ``p*p*3`` pixels, then MAE's init: ``init_first`` (the owner's own decoder
    parts made before), the blocks, norm and head (xavier Linear, LN 1/0), mask token normal(0.02).

    Attribute order and random draws are those of MAE's constructor, so that parameter order (and
    with it optimizer state) and seeded weights do not depend on which objective built them.
    """
    owner.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
    owner.decoder_pos_embed = nn.Parameter(sincos_2d(decoder_dim, *encoder.grid), requires_grad=False)
    owner.decoder_blocks = blocks
    owner.decoder_norm = nn.LayerNorm(decoder_dim, eps=1e-6)
    owner.decoder_pred = nn.Linear(decoder_dim, encoder.patch_size ** 2 * 3)
    init_linear_and_norm(*init_first, owner.decoder_blocks, owner.decoder_norm, owner.decoder_pred)
    nn.init.normal_(owner.mask_token, std=0.02)


def check_pixel_method(cfg: Any) -> None:
    """Settings shared by the pixel-reconstruction objectives: random masking and no teacher."""
    m = cfg.method
    if cfg.mask.type == "attentive":
        raise ConfigError(f"mask.type=attentive needs a teacher's [CLS] attention, which method={m} "
                          f"does not have; use mask.type=random")
    if cfg.mask.type != "random":
        raise ConfigError(f"mask.type: unknown {cfg.mask.type!r}; method={m} uses random")
    if cfg.mask.deterministic:
        raise ConfigError(f"mask.deterministic applies to attentive masking only; method={m} masks at random")
    if cfg.teacher.backend != "none":
        raise ConfigError(f"method={m} uses no teacher; set teacher.backend=none "
                          f"(it is {cfg.teacher.backend})")
    if not 0.0 < cfg.mask.ratio < 1.0:
        raise ConfigError(f"mask.ratio must be in (0, 1) for method={m}, got {cfg.mask.ratio}")


def check_decoder(section: str, dec: Any) -> None:
    """A decoder section (``mae``, ``crossmae``) whose width, depth and heads fit together."""
    if dec.decoder_depth < 1:
        raise ConfigError(f"{section}.decoder_depth must be at least 1, got {dec.decoder_depth}")
    if dec.decoder_dim % 4:
        raise ConfigError(f"{section}.decoder_dim={dec.decoder_dim} must be divisible by 4 (2-D sin-cos)")
    if dec.decoder_heads < 1 or dec.decoder_dim % dec.decoder_heads:
        raise ConfigError(f"{section}.decoder_dim={dec.decoder_dim} is not divisible by "
                          f"{section}.decoder_heads={dec.decoder_heads}")
