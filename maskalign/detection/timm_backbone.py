"""ViTDet on any ViT family timm builds: a detectron2 ``Backbone`` around the timm encoder.

detectron2's ViTDet ``ViT`` expresses a plain ViT only (no layer scale, registers, pre-norm,
QuickGELU), so a plain MAE-style encoder keeps today's exact path (``convert.to_detectron2``) and
every other family runs through :class:`TimmViTBackbone`: the timm model of the family with the
encoder's tensors, its blocks run by :class:`maskalign.encoders.dense.DenseViT` with the config's
window size and global blocks, giving the stride-``patch`` ``last_feat`` map that ViTDet's
``SimpleFeaturePyramid`` consumes. Parameter names keep ``.blocks.<i>.`` and ``.patch_embed``,
so detectron2's ``get_vit_lr_decay_rate`` applies its layer decay unchanged.

Refused, one line each: BEiT (its relative position bias is tied to one token grid, ViTDet's
windows need per-window tables), and patch sizes ViTDet's pyramid here has no scales for (DINOv2's
14: resampling its patch embedding would change the weights).
"""

from __future__ import annotations

from typing import Any

import torch

from maskalign.encoders.dense import DenseViT
from maskalign.encoders.families import is_plain_vit
from maskalign.encoders.load import build_model
from maskalign.errors import UserError

try:  # detectron2 is an optional extra: importing this module without it must not fail
    from detectron2.modeling import Backbone, ShapeSpec
except ImportError:  # pragma: no cover - exercised only where detectron2 is missing
    Backbone, ShapeSpec = torch.nn.Module, None  # type: ignore[assignment,misc]

PREFIX = "backbone.net.dense.model."


class TimmViTBackbone(Backbone):  # type: ignore[misc,valid-type]
    """A timm encoder of any family as ViTDet's ``net`` (module docstring).

    Args:
        arch: the encoder's arch (``PretrainedEncoder.arch``: timm model name and kwargs).
        img_size: the detection input size (position table resampled for it when weights load).
        window_size: ViTDet's window, in tokens.
        window_block_indexes: blocks with windowed attention (the others are global).
        drop_path_rate: stochastic depth of the timm blocks.
        out_feature: the name ``SimpleFeaturePyramid.in_feature`` reads.
    """

    def __init__(self, arch: dict[str, Any], img_size: int, window_size: int, window_block_indexes: list[int],
                 drop_path_rate: float = 0.0, out_feature: str = "last_feat") -> None:
        super().__init__()
        model = build_model(arch, img_size, drop_path_rate=drop_path_rate)
        depth = len(model.blocks)
        globals_ = [i for i in range(depth) if i not in set(window_block_indexes)]
        self.dense = DenseViT(model, window_size, globals_, out_indices=[depth - 1])
        self._out_features = [out_feature]
        self._out_feature_channels = {out_feature: self.dense.embed_dim}
        self._out_feature_strides = {out_feature: self.dense.patch_size}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {self._out_features[0]: self.dense(x)[0]}


def fit_backbone(cfg: Any, source: Any, origin: str) -> None:
    """Fit ``cfg.model.backbone.net`` to ``source``: detectron2's ViT for a plain ViT (as before),
    else the timm wrapper."""
    from detectron2.config import LazyCall as L

    from maskalign.detection import configs

    configs.fit_backbone(cfg, source.arch, source=origin)  # sizes, patch support, depth, windows, layer decay
    if is_plain_vit(source.state, source.family):
        return
    net = cfg.model.backbone.net
    if source.family == "beit":
        raise UserError(f"{origin}: BEiT cannot run as ViTDet's backbone: its relative position bias is tied to "
                        f"one token grid and ViTDet's windowed blocks would need per-window tables")
    cfg.model.backbone.net = L(TimmViTBackbone)(
        arch=source.arch, img_size=int(net.img_size), window_size=int(net.window_size),
        window_block_indexes=list(net.window_block_indexes), drop_path_rate=float(net.drop_path_rate),
        out_feature=str(net.get("out_feature", "last_feat")))


def detectron2_state(source: Any, cfg: Any) -> dict[str, torch.Tensor]:
    """The encoder's tensors under the detector's names: ``to_detectron2`` for plain ViTs, else the
    wrapper's timm model built at the detection size (position table resampled the family's way)."""
    from maskalign.detection.convert import to_detectron2

    if is_plain_vit(source.state, source.family):
        return to_detectron2(source.state)
    model, _, _ = source.loaded.build(int(cfg.model.backbone.net.img_size))
    return {PREFIX + k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
