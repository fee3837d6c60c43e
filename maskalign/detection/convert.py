"""A pre-trained encoder, in the keys and file form that detectron2's ViT backbone loads.

Why a converter at all, when ViTDet loads MAE's checkpoint through detectron2's
``?matching_heuristics=True``? That heuristic matches each model key to the longest checkpoint key
that is a "."-suffix of it, which works for MAE's ViT-B (768-d) by luck of shapes: the encoder's
final ``norm.weight`` also suffix-matches every 256-d ``*.norm.weight`` of the pyramid and heads,
is skipped there only because 768 != 256, and an encoder 256 wide would be loaded into them (or
rejected as ambiguous). So this module writes the exact target names instead, and loading needs no
heuristic:

* ``patch_embed.proj.*`` and ``blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}.*``:
  detectron2's ``ViT`` uses timm's attribute names; only the prefix ``backbone.net.`` is added
  (the ViT sits inside ``SimpleFeaturePyramid.net`` inside ``GeneralizedRCNN.backbone``).
* ``pos_embed`` (1, 1 + g*g, D) is kept *with* its [CLS] row: detectron2's ViT is built with
  ``pretrain_use_cls_token=True`` and ``pretrain_img_size`` = the pre-training resolution, and on
  every forward ``get_abs_pos`` drops the [CLS] row and resizes the g x g grid bicubically to the
  detection grid (64 x 64 at 1024 px). No offline resize is needed, and MaskAlign's fixed sin-cos
  table becomes the initial value of detectron2's learnable ``pos_embed``.
* ``cls_token`` and the final ``norm.*`` are dropped: detectron2's ViT has neither (it feeds the
  last block's patch tokens straight into the pyramid).

What is new in the detector (relative-position tables, which start at zero in ViTDet, the
pyramid, RPN and ROI heads) is missing from the file and keeps its initialisation.

The file is ``{"model": {name: tensor}}`` and nothing else, so that the bare ``torch.load`` in
fvcore's checkpointer (``weights_only=True`` by default since torch 2.6) accepts it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from maskalign.atomic import atomic_torch_save

PREFIX = "backbone.net."
_KEEP = re.compile(r"^(pos_embed|patch_embed\.proj\.(weight|bias)|blocks\.\d+\..+)$")
_DROP = re.compile(r"^(cls_token|norm\.(weight|bias))$")


def to_detectron2(state: dict[str, torch.Tensor], prefix: str = PREFIX) -> dict[str, torch.Tensor]:
    """Encoder tensors in timm key names -> detectron2 ViT key names (see the module docstring)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if _KEEP.match(key):
            out[prefix + key] = value.detach().clone().contiguous()
        elif not _DROP.match(key):
            raise ValueError(f"encoder key {key!r} has no place in detectron2's ViT")
    return out


def vit_kwargs(arch: dict[str, Any]) -> dict[str, Any]:
    """The arguments of detectron2's ``ViT`` that must equal the pre-trained encoder's."""
    return {
        "patch_size": int(arch["patch_size"]),
        "embed_dim": int(arch["embed_dim"]),
        "depth": int(arch["depth"]),
        "num_heads": int(arch["num_heads"]),
        "mlp_ratio": float(arch.get("mlp_ratio", 4.0)),
        "pretrain_img_size": int(arch["img_size"]),
        "pretrain_use_cls_token": True,
    }


def write_detectron2_checkpoint(state: dict[str, torch.Tensor], path: str | Path, converted: bool = False) -> Path:
    """Write the encoder where ``train.init_checkpoint`` can point (atomically).

    ``converted=True``: ``state`` is already in the detector's names (``timm_backbone.detectron2_state``,
    which also covers the families detectron2's ViT cannot express).
    """
    return atomic_torch_save({"model": state if converted else to_detectron2(state)}, Path(path))
