"""Layer-wise learning-rate decay for a ViT backbone under UperNet, with MAE/BEiT's no-decay set.

mmseg's ``LayerDecayOptimizerConstructor`` (``LearningRateDecayOptimizerConstructor`` with
``decay_type='layer_wise_vit'``) means to exempt ``pos_embed`` and ``cls_token`` from weight decay
but compares the un-prefixed names with ``backbone.pos_embed``, so the test never fires, and it
never exempts the relative position bias tables (PROTOCOLS.md (b)). MAE's ``param_groups_lrd`` and
BEiT's ``no_weight_decay`` exempt all of them. :class:`ViTLayerDecayOptimizerConstructor` keeps
mmseg's lr schedule exactly and applies the intended weight-decay rule:

* layer id: the stem -- ``backbone.{cls_token,mask_token,pos_embed,patch_embed.*}`` and, for the timm
  families' wrapper (``MaskalignTimmViT``), ``reg_token``, ``dist_token`` and CLIP's ``norm_pre.*`` -- -> 0
  (as :mod:`maskalign.transfer.layer_decay` files them for classification);
  ``backbone.layers.i.*`` -> i + 1; everything else (neck, heads) -> depth + 1;
* lr scale: ``layer_decay_rate ** (depth + 1 - layer_id)`` (heads 1, last block the rate,
  patch embedding rate ** depth), which is mmseg's ``decay_rate ** (num_layers - layer_id - 1)``
  with its ``num_layers = depth + 2``;
* weight decay 0 for 1-D tensors, ``*.bias``, ``pos_embed``, ``cls_token``, ``mask_token``, ``reg_token``,
  ``dist_token`` (timm's ``no_weight_decay()``) and ``*relative_position_bias_table``; the base weight decay
  otherwise.

Registered in mmseg's registry when :func:`~maskalign.segmentation.mmseg_import.import_mmseg` runs.
Config: ``optim_wrapper.constructor='ViTLayerDecayOptimizerConstructor'`` with
``paramwise_cfg=dict(num_layers=<depth>, layer_decay_rate=<rate>)``.
"""

from __future__ import annotations

import re
from typing import Any

from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor
from mmseg.registry import OPTIM_WRAPPER_CONSTRUCTORS
from torch import nn

# timm's ``VisionTransformer.no_weight_decay()`` names, plus MAE's mask token.
NO_DECAY_NAMES = ("pos_embed", "cls_token", "mask_token", "reg_token", "dist_token")
NO_DECAY_PATTERN = re.compile(r"(^|\.)relative_position_bias_table$")
_EMBED = ("cls_token", "mask_token", "pos_embed", "reg_token", "dist_token")
# Modules of the stem: the patch embedding and CLIP's pre-norm, which acts on the embeddings before block 0.
_STEM_MODULES = ("patch_embed.", "norm_pre.")


def layer_id(name: str, depth: int) -> int:
    """The layer a parameter belongs to, 0 (embeddings) .. depth + 1 (everything after the blocks)."""
    name = name.removeprefix("module.")
    if not name.startswith("backbone."):
        return depth + 1
    rest = name[len("backbone."):]
    if rest in _EMBED or rest.startswith(_STEM_MODULES):
        return 0
    if rest.startswith("layers."):
        return int(rest.split(".")[1]) + 1
    return depth + 1


def no_weight_decay(name: str, param: nn.Parameter) -> bool:
    """MAE/BEiT's rule: 1-D tensors, biases, embeddings and relative position tables."""
    name = name.removeprefix("module.")
    short = name.removeprefix("backbone.")
    return (param.ndim <= 1 or name.endswith(".bias") or short in NO_DECAY_NAMES
            or bool(NO_DECAY_PATTERN.search(name)))


def lr_scale(lid: int, depth: int, rate: float) -> float:
    return rate ** (depth + 1 - lid)


def param_groups(module: nn.Module, base_lr: float, base_wd: float, depth: int, rate: float) -> list[dict[str, Any]]:
    """The optimizer's parameter groups: one per (layer, decay / no decay)."""
    groups: dict[str, dict[str, Any]] = {}
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        lid = layer_id(name, depth)
        nd = no_weight_decay(name, param)
        key = f"layer_{lid}_{'no_decay' if nd else 'decay'}"
        if key not in groups:
            scale = lr_scale(lid, depth, rate)
            groups[key] = {"params": [], "param_names": [], "group_name": key, "lr_scale": scale,
                           "lr": base_lr * scale, "weight_decay": 0.0 if nd else base_wd}
        groups[key]["params"].append(param)
        groups[key]["param_names"].append(name)
    return list(groups.values())


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class ViTLayerDecayOptimizerConstructor(DefaultOptimWrapperConstructor):
    """mmseg's layer-wise ViT lr decay with the weight-decay exemptions it intended (module doc)."""

    def add_params(self, params: list[dict], module: nn.Module, **kwargs: Any) -> None:
        cfg = self.paramwise_cfg
        if "num_layers" not in cfg or not ("layer_decay_rate" in cfg or "decay_rate" in cfg):
            raise ValueError("ViTLayerDecayOptimizerConstructor needs paramwise_cfg num_layers and layer_decay_rate")
        depth = int(cfg["num_layers"])
        rate = float(cfg.get("layer_decay_rate", cfg.get("decay_rate")))
        groups = param_groups(module, self.base_lr, self.base_wd or 0.0, depth, rate)
        summary = ", ".join(f"{g['group_name']}: {len(g['params'])} x lr*{g['lr_scale']:.3g} wd {g['weight_decay']}"
                            for g in groups)
        print_log(f"layer-wise lr decay {rate} over {depth} blocks: {summary}", logger="current")
        params.extend(groups)
