"""ADE20K UperNet on any ViT family timm builds: the timm encoder registered as an mmseg backbone.

mmseg's ``MAE`` ViT expresses a plain ViT only; a plain MAE-style encoder keeps today's exact path
(``convert.to_mmseg_backbone``) and every other family (DINOv2 with layer scale and registers,
CLIP with pre-norm and QuickGELU, DeiT III, BEiT with its relative position bias...) runs as
:class:`MaskalignTimmViT`: the family's timm model built for the crop size, its blocks run by
:class:`maskalign.encoders.dense.DenseViT` (global attention, as UperNet's ViT), returning the
``out_indices`` blocks' maps (the last block's after the encoder's final norm).

The timm modules are registered at the wrapper's top level with ``blocks`` named ``layers``, so
parameter names follow mmseg's ViT (``backbone.layers.<i>.``, ``backbone.patch_embed``,
``backbone.cls_token``, ``backbone.pos_embed``) and ``ViTLayerDecayOptimizerConstructor`` assigns
its layer ids unchanged.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from mmengine.model import BaseModule
from mmseg.registry import MODELS

from maskalign.encoders.dense import DenseViT
from maskalign.encoders.families import is_plain_vit
from maskalign.encoders.load import build_model
from maskalign.segmentation.convert import CheckpointError, TimmBackboneState


def _side(size: Any) -> int:
    if isinstance(size, int):
        return size
    h, w = tuple(size)
    if h != w:
        raise CheckpointError(f"backbone img_size {tuple(size)}: the timm wrapper runs square crops only")
    return int(h)


@MODELS.register_module()
class MaskalignTimmViT(BaseModule):
    """A timm encoder of any family as an mmseg backbone (module docstring).

    Args:
        arch: the encoder's arch (``PretrainedEncoder.arch``).
        img_size: the crop size (int or a square (h, w)).
        out_indices: blocks whose outputs feed the neck.
        drop_path_rate: stochastic depth of the timm blocks.
        init_cfg: mmengine init config (``Pretrained`` with the converted weights).
        described: ``patch_size``, ``embed_dims``, ``num_layers``, ``num_heads`` as mmseg's ViT names
            them (the job and its record read them); checked against the built model.
    """

    def __init__(self, arch: dict[str, Any], img_size: Any, out_indices: list[int], drop_path_rate: float = 0.0,
                 init_cfg: dict | None = None, **described: int) -> None:
        super().__init__(init_cfg=init_cfg)
        model = build_model(arch, _side(img_size), drop_path_rate=drop_path_rate)
        actual = {"patch_size": arch["patch_size"], "embed_dims": arch["embed_dim"], "num_layers": arch["depth"],
                  "num_heads": arch["num_heads"]}
        wrong = {k: v for k, v in described.items() if actual.get(k) != v}
        if wrong:
            raise CheckpointError(f"MaskalignTimmViT: {wrong} does not describe the encoder ({actual})")
        for name, child in model.named_children():
            self.add_module("layers" if name == "blocks" else name, child)
        for name, p in model.named_parameters(recurse=False):
            self.register_parameter(name, p)
        # The same modules, run by DenseViT; kept off the module tree so each parameter has one name.
        object.__setattr__(self, "_dense", DenseViT(model, 0, (), out_indices))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self._dense(x))


def fit_backbone(cfg: Any, source: Any) -> Any:
    """Plain ViT: ``source`` unchanged (mmseg's MAE backbone, as before). Other families: the config's
    backbone becomes :class:`MaskalignTimmViT` and the returned source's ``state`` holds its weights."""
    if is_plain_vit(source.state, source.family):
        return source
    bb = cfg.model.backbone
    side = _side(bb["img_size"])
    cfg.model.backbone = {
        "type": "MaskalignTimmViT", "arch": source.arch, "img_size": side, "out_indices": list(bb["out_indices"]),
        "drop_path_rate": float(bb.get("drop_path_rate", 0.0)), "init_cfg": bb.get("init_cfg"),
        "patch_size": int(source.arch["patch_size"]), "embed_dims": int(source.arch["embed_dim"]),
        "num_layers": int(source.arch["depth"]), "num_heads": int(source.arch["num_heads"])}
    model, _, _ = source.loaded.build(side)
    state = TimmBackboneState(("layers." + k[len("blocks."):] if k.startswith("blocks.") else k, v.detach().clone())
                              for k, v in model.state_dict().items())
    return replace(source, state=state)
