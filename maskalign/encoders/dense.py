"""A timm ViT of any family as a dense backbone: its own blocks, run with ViTDet-style windows.

ViTDet (Li et al., 2022, section 3) keeps the plain ViT and restricts most blocks to
non-overlapping windows, with a few blocks of global attention. detectron2's and mmseg's ViTs
cannot express layer scale, registers, CLIP's pre-norm or QuickGELU; this wrapper runs the timm
model's own modules instead, so every tensor of the encoder is used:

* embedding: ``patch_embed``, ``_pos_embed`` (position table already resampled for the dense
  resolution by the family's timm filter; [CLS] and registers prepended), ``norm_pre``;
* a global block is the timm block on the whole sequence;
* a windowed block pads the token grid with zeros to a multiple of the window (as ViTDet's
  ``window_partition``), and runs the timm block on each window's tokens *with* the prefix
  tokens ([CLS], registers) in front -- exactly "the block run on that window alone"; the prefix
  tokens' outputs are averaged over the windows (the one choice this adds);
* the final ``norm`` is applied to the last block's output, as in the timm model.

BEiT's relative position bias is tied to one token grid: under windows each windowed block gets a
table for the window's grid, resized from the table it holds with timm's
``resize_rel_pos_bias_table`` (BEiT's own resizing for dense tasks: the table interpolated over
relative offsets, the three [CLS] entries kept) -- :func:`window_rel_pos_tables`; global blocks keep
the table of the full grid. Loading a file, the family's timm filter resizes each block's stored
table straight to that block's grid (``detection.timm_backbone.detectron2_state``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from maskalign.encoders.source_spec import CheckpointError


def window_partition(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """(B, H, W, C) -> (B * nW, window * window, C), zero-padded to whole windows; returns padded (Hp, Wp)."""
    b, h, w, c = x.shape
    ph, pw = (-h) % window, (-w) % window
    if ph or pw:
        x = F.pad(x, (0, 0, 0, pw, 0, ph))
    hp, wp = h + ph, w + pw
    x = x.view(b, hp // window, window, wp // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window * window, c), (hp, wp)


def window_unpartition(x: torch.Tensor, window: int, padded: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (B * nW, window * window, C) -> (B, H, W, C)."""
    hp, wp = padded
    c = x.shape[-1]
    b = x.shape[0] // ((hp // window) * (wp // window))
    x = x.view(b, hp // window, wp // window, window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, hp, wp, c)[:, : size[0], : size[1]].contiguous()


def window_rel_pos_tables(model: nn.Module, window: int, global_blocks: set[int]) -> list[int]:
    """Give BEiT's windowed blocks (those not in ``global_blocks``) relative position tables for a
    ``window`` x ``window`` grid, resized from their current tables; returns the blocks changed."""
    from timm.layers import resize_rel_pos_bias_table
    from timm.models.beit import gen_relative_position_index

    changed = []
    for i, blk in enumerate(model.blocks):  # type: ignore[arg-type]
        attn = blk.attn
        table = getattr(attn, "relative_position_bias_table", None)
        if i in global_blocks or table is None or tuple(attn.window_size) == (window, window):
            continue
        size = (2 * window - 1) ** 2 + 3
        with torch.no_grad():
            new = resize_rel_pos_bias_table(table.detach(), new_window_size=(window, window),
                                            new_bias_shape=(size, table.shape[1]))
        attn.window_size = (window, window)
        attn.num_relative_distance = size
        attn.relative_position_bias_table = nn.Parameter(new.to(table), requires_grad=table.requires_grad)
        attn.relative_position_index = gen_relative_position_index((window, window), device=table.device)
        changed.append(i)
    return changed


def build_windowed(loaded: Any, img_size: int, window: int, global_blocks: set[int]) -> nn.Module:
    """``loaded``'s encoder (a ``LoadedEncoder``) at ``img_size`` for ``DenseViT(window, global_blocks)``:
    for BEiT, each windowed block's table is resized from the stored one straight to the window
    (one resize, by the family's timm filter), the global blocks' to the whole grid."""
    if loaded.family != "beit" or not window:
        return loaded.build(img_size)[0]
    from maskalign.encoders import convert
    from maskalign.encoders.load import build_model

    model = build_model(loaded.arch, img_size)
    window_rel_pos_tables(model, window, global_blocks)
    convert.load_strict(model, convert.fit_to_model(loaded.state, model, "beit", False),
                        str(loaded.meta["source"]["spec"]), "beit")
    return model.eval()


class DenseViT(nn.Module):
    """Feature maps of a timm ViT (``VisionTransformer`` or ``Beit``) for dense prediction.

    Args:
        model: the timm encoder, built for the dense input size (``num_classes=0``).
        window_size: ViTDet's window (in tokens); 0 = every block global.
        global_blocks: indices of blocks with global attention when windows are on.
        out_indices: blocks whose outputs are returned (the last one after the final norm).
    """

    def __init__(self, model: nn.Module, window_size: int = 0, global_blocks: Sequence[int] = (),
                 out_indices: Sequence[int] = (-1,)) -> None:
        super().__init__()
        self.model = model
        depth = len(model.blocks)  # type: ignore[arg-type]
        self.window_size = int(window_size)
        self.global_blocks = {int(i) % depth for i in global_blocks}
        self.out_indices = [int(i) % depth for i in out_indices]
        self.is_beit = hasattr(model, "rel_pos_bias")
        if self.is_beit and self.window_size and len(self.global_blocks) < depth:
            if getattr(model, "rel_pos_bias", None) is not None:
                raise CheckpointError("BEiT with one shared relative position table as a windowed backbone: the "
                                   "windowed and the global blocks would need tables of two grids")
            window_rel_pos_tables(model, self.window_size, self.global_blocks)
        self.num_prefix = int(getattr(model, "num_prefix_tokens", 1))
        self.embed_dim = int(model.embed_dim)  # type: ignore[arg-type]
        self.patch_size = int(model.patch_embed.patch_size[0])  # type: ignore[index]

    def _embed(self, images: torch.Tensor) -> torch.Tensor:
        m = self.model
        if self.is_beit:
            x = m.patch_embed(images)
            x = torch.cat([m.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
            if m.pos_embed is not None:
                x = x + m.pos_embed
            return m.pos_drop(x)
        x = m._pos_embed(m.patch_embed(images))
        return m.norm_pre(m.patch_drop(x))

    def _block(self, i: int, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        blk = self.model.blocks[i]
        run = (lambda t: blk(t, shared_rel_pos_bias=None)) if self.is_beit else blk
        if not self.window_size or i in self.global_blocks:
            return run(x)
        p = self.num_prefix
        prefix, tokens = x[:, :p], x[:, p:]
        b, _, c = tokens.shape
        windows, padded = window_partition(tokens.reshape(b, grid[0], grid[1], c), self.window_size)
        n_win = windows.shape[0] // b
        seq = torch.cat([prefix.repeat_interleave(n_win, dim=0), windows], dim=1)
        out = run(seq)
        tokens = window_unpartition(out[:, p:], self.window_size, padded, grid).reshape(b, -1, c)
        prefix = out[:, :p].reshape(b, n_win, p, c).mean(dim=1)
        return torch.cat([prefix, tokens], dim=1)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """One (B, C, H/p, W/p) map per ``out_indices`` entry."""
        grid = (images.shape[-2] // self.patch_size, images.shape[-1] // self.patch_size)
        x = self._embed(images)
        outs = []
        last = len(self.model.blocks) - 1  # type: ignore[arg-type]
        for i in range(last + 1):
            x = self._block(i, x, grid)
            if i in self.out_indices:
                y = self.model.norm(x) if i == last else x
                y = y[:, self.num_prefix:]
                outs.append(y.transpose(1, 2).reshape(y.shape[0], self.embed_dim, *grid))
        return outs
