"""Project encoder (timm key names) -> mmsegmentation ``MAE`` backbone keys.

The mapping is that of mmseg's ``tools/model_converters/beit2mmseg.py``, written here as a pure
function on tensors (see PROTOCOLS.md (b)):

=============================  ========================================
timm / this project            mmseg ``MAE`` backbone
=============================  ========================================
``cls_token``, ``pos_embed``   same (``pos_embed`` resized to the grid)
``patch_embed.proj.*``         ``patch_embed.projection.*``
``blocks.i.norm1/norm2.*``     ``layers.i.ln1/ln2.*``
``blocks.i.attn.qkv.*``        ``layers.i.attn.qkv.*``
``blocks.i.attn.proj.*``       ``layers.i.attn.proj.*``
``blocks.i.mlp.fc1.*``         ``layers.i.ffn.layers.0.0.*``
``blocks.i.mlp.fc2.*``         ``layers.i.ffn.layers.1.*``
``blocks.i.ls1/ls2.gamma``     ``layers.i.gamma_1/gamma_2`` (timm layer scale, if present)
``norm.*``                     dropped (the backbone runs with ``final_norm=False``)
=============================  ========================================

mmseg's ``MAE`` backbone builds its ``BEiTAttention`` with ``bias=True``: one ``qkv`` Linear with
a 3*D bias, exactly timm's, so the qkv tensors carry over unchanged. (Only mmseg's ``BEiT``
backbone, ``qv_bias=True``, has separate ``q_bias``/``v_bias`` parameters; it also has no absolute
position embedding, so an MAE-style encoder does not convert to it without loss, and it is not a
target here.)

The backbone's own parameters that no ViT checkpoint has (the per-block relative position bias
tables, and ``gamma_1/gamma_2`` without timm layer scale) keep their initial values: zero for the
tables (``MAEAttention`` does not initialise them, as MAE/BEiT transfer prescribes) and
``init_values`` for the gammas (1.0 in the configs here, i.e. no scaling).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from maskalign.errors import CheckpointError
from maskalign.models.pos_embed import resize_pos_embed


class TimmBackboneState(dict):
    """Weights already in ``MaskalignTimmViT``'s names (``segmentation.timm_backbone``): not converted again."""


_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")
_BLOCK_MAP = {
    "norm1.weight": "ln1.weight", "norm1.bias": "ln1.bias",
    "norm2.weight": "ln2.weight", "norm2.bias": "ln2.bias",
    "attn.qkv.weight": "attn.qkv.weight", "attn.qkv.bias": "attn.qkv.bias",
    "attn.proj.weight": "attn.proj.weight", "attn.proj.bias": "attn.proj.bias",
    "mlp.fc1.weight": "ffn.layers.0.0.weight", "mlp.fc1.bias": "ffn.layers.0.0.bias",
    "mlp.fc2.weight": "ffn.layers.1.weight", "mlp.fc2.bias": "ffn.layers.1.bias",
    "ls1.gamma": "gamma_1", "ls2.gamma": "gamma_2",
}
_TOP_MAP = {
    "cls_token": "cls_token", "pos_embed": "pos_embed",
    "patch_embed.proj.weight": "patch_embed.projection.weight",
    "patch_embed.proj.bias": "patch_embed.projection.bias",
}
_DROPPED = ("norm.weight", "norm.bias", "fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias")


def to_mmseg_backbone(state: Mapping[str, torch.Tensor], grid: tuple[int, int] | None = None
                      ) -> dict[str, torch.Tensor]:
    """Rename a timm-keyed ViT encoder's tensors to mmseg's ``MAE`` backbone keys.

    Args:
        state: encoder tensors as ``maskalign.checkpoint.load_encoder_state`` returns them
            (teacher, decoder and head keys already dropped).
        grid: the backbone's patch grid (``img_size // patch_size`` per side); ``pos_embed`` is
            resized bicubically to it, the [CLS] row kept. None keeps the stored grid.

    Returns:
        A new dict of tensors keyed for ``EncoderDecoder.backbone`` (without the ``backbone.``
        prefix). Raises :class:`CheckpointError` on any key it does not know.
    """
    if isinstance(state, TimmBackboneState):
        return dict(state)  # built at the crop size already, position table resampled the family's way
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state.items():
        if key in _TOP_MAP:
            out[_TOP_MAP[key]] = value
            continue
        if key in _DROPPED:
            continue
        m = _BLOCK.match(key)
        if m and m.group(2) in _BLOCK_MAP:
            out[f"layers.{m.group(1)}.{_BLOCK_MAP[m.group(2)]}"] = value
            continue
        unknown.append(key)
    if unknown:
        raise CheckpointError(f"cannot convert encoder keys to mmseg's ViT: {', '.join(sorted(unknown)[:6])}"
                              + (" ..." if len(unknown) > 6 else ""))
    if grid is not None and "pos_embed" in out:
        try:
            out["pos_embed"] = resize_pos_embed(out["pos_embed"], tuple(grid))
        except ValueError as e:
            raise CheckpointError(f"pos_embed: {e}") from None
    return out


# Backbone parameters that no ViT checkpoint provides; they keep the backbone's own initial value.
_OWN = re.compile(r"^layers\.\d+\.(attn\.relative_position_(bias_table|index)|gamma_[12])$")


def check_fits(backbone: torch.nn.Module, converted: Mapping[str, torch.Tensor], source: str = "encoder") -> None:
    """Refuse (one line) converted weights that would load only partly into ``backbone``.

    mmseg loads backbone checkpoints non-strictly and says nothing about what it skipped; this
    makes sure every backbone parameter except the relative-position tables and layer scales is
    provided, with the right shape, and nothing is left over.
    """
    own = backbone.state_dict()
    missing = [k for k in own if k not in converted and not _OWN.match(k)]
    unexpected = [k for k in converted if k not in own]
    shapes = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in converted.items()
              if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {missing[:4]}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:4]}")
        if shapes:
            parts.append(f"shape mismatch {shapes[:2]}")
        raise CheckpointError(f"{source} does not fit the segmentation backbone: {'; '.join(parts)}")
