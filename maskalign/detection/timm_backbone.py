"""ViTDet on any ViT family timm builds: a detectron2 ``Backbone`` around the timm encoder.

detectron2's ViTDet ``ViT`` expresses a plain ViT only (no layer scale, registers, pre-norm,
QuickGELU), so a plain MAE-style encoder keeps today's exact path (``convert.to_detectron2``) and
every other family runs through :class:`TimmViTBackbone`: the timm model of the family with the
encoder's tensors, its blocks run by :class:`maskalign.encoders.dense.DenseViT` with the config's
window size and global blocks, giving the stride-``patch`` ``last_feat`` map that ViTDet's
``SimpleFeaturePyramid`` consumes. Parameter names keep ``.blocks.<i>.`` and ``.patch_embed``,
so detectron2's ``get_vit_lr_decay_rate`` applies its layer decay unchanged.

Two families need one step more (docs/coco.md says why these choices):

* patch 14 (DINOv2): the encoder runs at its own patch size, every tensor as trained (1024 px ->
  a 73 x 73 token grid), and its stride-14 map is resampled bilinearly onto the stride-16 grid
  (64 x 64) that ViTDet's pyramid scales (4, 2, 1, 1/2) are made for -- :data:`PYRAMID_STRIDE`;
* BEiT: the windowed blocks get relative position tables for the 14 x 14 window and the global
  blocks for the whole grid, each resized from the stored table by timm's
  ``resize_rel_pos_bias_table`` (:func:`maskalign.encoders.dense.window_rel_pos_tables`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from maskalign.encoders.dense import DenseViT, build_windowed
from maskalign.encoders.families import is_plain_vit
from maskalign.encoders.load import build_model

try:  # detectron2 is an optional extra: importing this module without it must not fail
    from detectron2.modeling import Backbone, ShapeSpec
except ImportError:  # pragma: no cover - exercised only where detectron2 is missing
    Backbone, ShapeSpec = torch.nn.Module, None  # type: ignore[assignment,misc]

PREFIX = "backbone.net.dense.model."
#: Patch sizes ViTDet's pyramid has no scales for -> the stride their feature map is resampled to.
PYRAMID_STRIDE = {14: 16}


class TimmViTBackbone(Backbone):  # type: ignore[misc,valid-type]
    """A timm encoder of any family as ViTDet's ``net`` (module docstring).

    Args:
        arch: the encoder's arch (``PretrainedEncoder.arch``: timm model name and kwargs).
        img_size: the detection input size (position table resampled for it when weights load).
        window_size: ViTDet's window, in tokens.
        window_block_indexes: blocks with windowed attention (the others are global).
        drop_path_rate: stochastic depth of the timm blocks.
        out_feature: the name ``SimpleFeaturePyramid.in_feature`` reads.
        out_stride: the stride of the map given to the pyramid (0: the patch size); another stride
            resamples the map bilinearly (``align_corners=False``) to ``input size // out_stride``.
    """

    def __init__(self, arch: dict[str, Any], img_size: int, window_size: int, window_block_indexes: list[int],
                 drop_path_rate: float = 0.0, out_feature: str = "last_feat", out_stride: int = 0) -> None:
        super().__init__()
        model = build_model(arch, img_size, drop_path_rate=drop_path_rate)
        depth = len(model.blocks)
        globals_ = [i for i in range(depth) if i not in set(window_block_indexes)]
        self.dense = DenseViT(model, window_size, globals_, out_indices=[depth - 1])
        self.out_stride = int(out_stride or self.dense.patch_size)
        self._out_features = [out_feature]
        self._out_feature_channels = {out_feature: self.dense.embed_dim}
        self._out_feature_strides = {out_feature: self.out_stride}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feat = self.dense(x)[0]
        if self.out_stride != self.dense.patch_size:
            size = (x.shape[-2] // self.out_stride, x.shape[-1] // self.out_stride)
            feat = F.interpolate(feat, size=size, mode="bilinear", align_corners=False)
        return {self._out_features[0]: feat}


def _plain(source: Any) -> bool:
    """detectron2's own ViT: a plain ViT whose patch the pyramid has scales for."""
    return is_plain_vit(source.state, source.family) and int(source.arch["patch_size"]) not in PYRAMID_STRIDE


def fit_backbone(cfg: Any, source: Any, origin: str) -> None:
    """Fit ``cfg.model.backbone.net`` to ``source``: detectron2's ViT for a plain ViT (as before),
    else the timm wrapper."""
    from detectron2.config import LazyCall as L

    from maskalign.detection import configs

    patch = int(source.arch["patch_size"])
    stride = PYRAMID_STRIDE.get(patch, patch)  # the pyramid sees the resampled stride
    configs.fit_backbone(cfg, {**source.arch, "patch_size": stride}, source=origin)  # sizes, depth, windows, decay
    if _plain(source):
        return
    net = cfg.model.backbone.net
    cfg.model.backbone.net = L(TimmViTBackbone)(
        arch=source.arch, img_size=int(net.img_size), window_size=int(net.window_size),
        window_block_indexes=list(net.window_block_indexes), drop_path_rate=float(net.drop_path_rate),
        out_feature=str(net.get("out_feature", "last_feat")), out_stride=stride)


def detectron2_state(source: Any, cfg: Any) -> dict[str, torch.Tensor]:
    """The encoder's tensors under the detector's names: ``to_detectron2`` for plain ViTs, else the
    wrapper's timm model built at the detection size (position table resampled the family's way)."""
    from maskalign.detection.convert import to_detectron2

    if _plain(source):
        return to_detectron2(source.state)
    net = cfg.model.backbone.net
    depth = int(source.arch["depth"])
    globals_ = {i for i in range(depth) if i not in set(net.window_block_indexes)}
    model = build_windowed(source.loaded, int(net.img_size), int(net.window_size), globals_)
    return {PREFIX + k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
