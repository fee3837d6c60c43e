"""CrossMAE (Fu et al., 2024, "Rethinking Patch Dependence for Masked Autoencoders").

MAE with three changes, as in ``TonyLianLong/CrossMAE`` (``models_cross.py``, ``transformer_utils.py``):

* **Cross-attention-only decoder.** Each query is the shared mask token plus the fixed sin-cos
  decoder position embedding of one patch to predict. Queries attend to the visible encoder
  tokens (with [CLS]) and never to each other: there is no self-attention among mask tokens,
  so every query is decoded independently of the others. There are no visible-token queries and
  no ``decoder_embed``; encoder features are projected inside each cross-attention (key/value
  Linear from the encoder width to the decoder width).
* **Partial reconstruction.** Of the ``N`` patches, ``int(N(1-mr))`` are visible,
  ``int(N(mr-kmr))`` are masked but not predicted, and the rest (a fraction ``kmr``, the
  "prediction ratio" ``kept_mask_ratio``) are predicted. ViT-B/16 with mr 0.75, kmr 0.25:
  49 visible, 98 dropped, 49 predicted.
* **Inter-block feature fusion.** The encoder returns the output of every block (and, with
  ``use_input``, its input tokens), all before the final norm: ``k`` maps. A bias-free Linear
  ``k -> decoder_depth`` (``WeightedFeatureMaps``) mixes them into one map per decoder block,
  which goes through that block's own LayerNorm (with affine) and serves as its keys and values.
  The encoder's final norm is therefore never used; it is frozen here (it would get no gradient
  anyway), so DDP needs no unused-parameter search.

Initialisation of the fusion weights: the official constructor draws them from
``normal(0, 1/sqrt(k))``, but the model's global ``initialize_weights()`` runs afterwards and
overwrites every ``nn.Linear``, this one included, with xavier-uniform. We keep the normal init
the code evidently intends. Everything else is MAE's init (xavier-uniform Linear, bias 0; LN 1/0;
mask token normal(0.02)). The fusion matrix is 2-D and takes weight decay, as in the official
optimizer groups.

The loss is the MSE over all predicted patches and values (every predicted patch weighs the
same), against norm-pix targets. The official learning-rate rule multiplies the usual
``blr * batch / 256`` by ``kmr / mr``; this objective exposes that factor as ``lr_multiplier``,
which the engine applies.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import Mlp

from maskalign.config import ConfigError
from maskalign.masking import num_visible
from maskalign.models.vit import MaskedViT
from maskalign.objectives.base import Objective, ObjectiveOutput
from maskalign.objectives.pixels import add_pixel_decoder, check_decoder, check_pixel_method, pixel_targets
from maskalign.objectives.registry import build_student, register_objective

LR_SCALES = ("ratio", "inverse", "none")


class WeightedFeatureMaps(nn.Module):
    """``k`` encoder feature maps -> ``decoder_depth`` mixtures, by a bias-free Linear over ``k``."""

    def __init__(self, k: int, decoder_depth: int) -> None:
        super().__init__()
        self.linear = nn.Linear(k, decoder_depth, bias=False)
        nn.init.normal_(self.linear.weight, mean=0.0, std=1.0 / math.sqrt(k))

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """``k`` tensors (B, n, D) -> (B, n, D, decoder_depth)."""
        return self.linear(torch.stack(feats, dim=-1))


class CrossAttention(nn.Module):
    """Queries from the decoder tokens, keys and values from the encoder tokens; no self-attention."""

    def __init__(self, dim: int, context_dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"decoder width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(context_dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, nq, d = x.shape
        nk, h = context.shape[1], self.num_heads
        q = self.q(x).reshape(b, nq, h, d // h).transpose(1, 2)
        k, v = self.kv(context).reshape(b, nk, 2, h, d // h).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, nq, d))


class CrossAttentionBlock(nn.Module):
    """Pre-norm block: ``x + CrossAttn(LN(x), context)``, then ``x + MLP(LN(x))``."""

    def __init__(self, dim: int, context_dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.norm1 = norm(dim)
        self.attn = CrossAttention(dim, context_dim, num_heads)
        self.norm2 = norm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), context)
        return x + self.mlp(self.norm2(x))


@register_objective("crossmae")
class CrossMAE(Objective):
    """Cross-attention masked autoencoder with partial reconstruction and feature fusion.

    Args:
        encoder: the student ViT.
        mask_ratio: fraction of patches hidden from the encoder (0.75).
        kept_mask_ratio: fraction of all patches that are predicted (0.25; at most ``mask_ratio``).
        decoder_dim, decoder_depth, decoder_heads: decoder width, blocks and heads (ViT-B recipe:
            512, 12, 16; the official class default depth is 8).
        use_input: also fuse the encoder's input tokens (``k = depth + 1``).
        norm_pix_loss: normalise each target patch by its own mean and variance.
        lr_scale: "ratio" (lr x kmr/mr, the official default), "inverse" (x mr/kmr) or "none".
    """

    label = "CrossMAE"
    recipes = {"crossmae": "crossmae_vitb16_800ep"}

    def __init__(self, encoder: MaskedViT, *, mask_ratio: float = 0.75, kept_mask_ratio: float = 0.25,
                 decoder_dim: int = 512, decoder_depth: int = 8, decoder_heads: int = 16,
                 mlp_ratio: float = 4.0, use_input: bool = True, norm_pix_loss: bool = True,
                 lr_scale: str = "ratio") -> None:
        super().__init__()
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"CrossMAE needs a mask ratio in (0, 1), got {mask_ratio}")
        if not 0.0 < kept_mask_ratio <= mask_ratio:
            raise ValueError(f"kept_mask_ratio must be in (0, mask_ratio={mask_ratio}], got {kept_mask_ratio}")
        if lr_scale not in LR_SCALES:
            raise ValueError(f"unknown lr_scale {lr_scale!r}; use {', '.join(LR_SCALES)}")
        self.encoder = encoder
        self.mask_ratio, self.kept_mask_ratio = mask_ratio, kept_mask_ratio
        self.use_input, self.norm_pix_loss, self.lr_scale = use_input, norm_pix_loss, lr_scale
        n = encoder.num_patches
        self.num_keep = num_visible(n, mask_ratio)
        self.num_dropped = int(n * (mask_ratio - kept_mask_ratio))
        self.num_pred = n - self.num_keep - self.num_dropped
        if self.num_pred < 1:
            raise ValueError(f"kept_mask_ratio={kept_mask_ratio} predicts no patch of {n}")
        # The encoder's final norm is not on CrossMAE's path (fused maps are pre-norm).
        encoder.norm.requires_grad_(False)

        d_enc = encoder.embed_dim
        self.wfm = WeightedFeatureMaps(encoder.depth + int(use_input), decoder_depth)
        self.dec_norms = nn.ModuleList(nn.LayerNorm(d_enc, eps=1e-6) for _ in range(decoder_depth))
        blocks = nn.ModuleList(
            CrossAttentionBlock(decoder_dim, d_enc, decoder_heads, mlp_ratio) for _ in range(decoder_depth))
        add_pixel_decoder(self, encoder, decoder_dim, blocks, init_first=[self.dec_norms])

    # --- built from a config -----------------------------------------------------------------
    @classmethod
    def check_config(cls, cfg: Any) -> None:
        check_pixel_method(cfg)
        c = cfg.crossmae
        check_decoder("crossmae", c)
        if not 0.0 < c.kept_mask_ratio <= cfg.mask.ratio:
            raise ConfigError(f"crossmae.kept_mask_ratio={c.kept_mask_ratio} must be in (0, mask.ratio="
                              f"{cfg.mask.ratio}]: only masked patches can be predicted")
        if c.lr_scale not in LR_SCALES:
            raise ConfigError(f"crossmae.lr_scale: unknown {c.lr_scale!r}; use {', '.join(LR_SCALES)}")

    @classmethod
    def from_config(cls, cfg: Any) -> CrossMAE:
        c = cfg.crossmae
        encoder = build_student(cfg)
        n = encoder.num_patches
        if n - int(n * (1 - cfg.mask.ratio)) - int(n * (cfg.mask.ratio - c.kept_mask_ratio)) < 1:
            raise ConfigError(f"crossmae.kept_mask_ratio={c.kept_mask_ratio} predicts no patch of {n}")
        return cls(encoder, mask_ratio=cfg.mask.ratio, kept_mask_ratio=c.kept_mask_ratio,
                   decoder_dim=c.decoder_dim, decoder_depth=c.decoder_depth, decoder_heads=c.decoder_heads,
                   use_input=c.use_input, norm_pix_loss=c.norm_pix_loss, lr_scale=c.lr_scale)

    # --- what the tables and the engine read --------------------------------------------------
    @property
    def forward_ratio(self) -> float:
        return self.num_keep / self.encoder.num_patches

    @property
    def reconstruct_ratio(self) -> float:
        return self.num_pred / self.encoder.num_patches

    @property
    def supervision(self) -> str:
        return "RGB"

    @property
    def lr_multiplier(self) -> float:
        """Factor on ``blr * batch / 256``: the official ``kmr / mr`` (or its inverse, or 1)."""
        if self.lr_scale == "ratio":
            return self.kept_mask_ratio / self.mask_ratio
        if self.lr_scale == "inverse":
            return self.mask_ratio / self.kept_mask_ratio
        return 1.0

    # --- pieces ------------------------------------------------------------------------------
    def choose_tokens(self, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Visible (B, num_keep) and to-predict (B, num_pred, raster order) patch indices."""
        ids = torch.rand(batch, self.encoder.num_patches, device=device).argsort(dim=1)
        keep = ids[:, :self.num_keep]
        pred = ids[:, self.num_keep + self.num_dropped:].sort(dim=1).values
        return keep, pred

    def encoder_features(self, images: torch.Tensor, keep_idx: torch.Tensor) -> list[torch.Tensor]:
        """The ``k`` pre-norm maps (B, 1+n, D): the input tokens (with ``use_input``), then every block."""
        enc = self.encoder
        x = enc.embed(images, keep_idx)
        feats = [x] if self.use_input else []
        for blk in enc.blocks:
            x = blk(x)
            feats.append(x)
        return feats

    def queries(self, pred_idx: torch.Tensor) -> torch.Tensor:
        """Mask token + decoder position embedding at the positions to predict: (B, m, Dd)."""
        pos = self.decoder_pos_embed[0, 1:]
        return self.mask_token + pos[pred_idx]

    def decode(self, queries: torch.Tensor, fused: torch.Tensor) -> torch.Tensor:
        """Queries (B, m, Dd), fused encoder maps (B, 1+n, D, depth) -> decoder tokens (B, m, Dd)."""
        x = queries
        for j, blk in enumerate(self.decoder_blocks):
            x = blk(x, self.dec_norms[j](fused[..., j]))
        return x

    def reconstruct(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Predicted pixels (B, m, p*p*3), their targets, the visible and the predicted indices."""
        keep, pred_idx = self.choose_tokens(images.shape[0], images.device)
        fused = self.wfm(self.encoder_features(images, keep))
        pred = self.decoder_pred(self.decoder_norm(self.decode(self.queries(pred_idx), fused)))
        target = pixel_targets(images, self.encoder.patch_size, self.norm_pix_loss)
        target = torch.gather(target, 1, pred_idx.unsqueeze(-1).expand(-1, -1, target.shape[-1]))
        return pred, target, keep, pred_idx

    def forward(self, images: torch.Tensor) -> ObjectiveOutput:
        pred, target, _, _ = self.reconstruct(images)
        loss = (pred.float() - target).pow(2).mean()
        return ObjectiveOutput(loss, {"recon_loss": loss.detach()})
