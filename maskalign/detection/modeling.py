"""Small pieces the ViTDet recipe needs when the encoder's patch is not 16 pixels.

ViTDet's simple feature pyramid turns the single stride-16 ViT map into p2..p5 with scale factors
(4, 2, 1, 0.5) and adds p6 by max-pooling p5. The Mask R-CNN heads of detectron2's model zoo are
wired to exactly p2..p6 (anchor sizes 32..512, poolers on p2..p5). A patch-8 encoder (the demo
world's) yields a stride-8 map; (2, 1, 0.5) gives p2..p4, and detectron2's pyramid has no 0.25
stage, so :class:`MaxPoolLevels` adds p5 and p6 by max-pooling p4 twice. The heads then stay
unchanged, which keeps the FPN width (256) and box-head widths that their input shapes hard-wire.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

# detectron2 strides: p2..p5 from the pyramid's stages for each supported ViT patch size.
SCALE_FACTORS = {16: (4.0, 2.0, 1.0, 0.5), 8: (2.0, 1.0, 0.5)}


class MaxPoolLevels(nn.Module):
    """``num_levels`` extra pyramid levels above ``in_feature``, each a stride-2 max-pool of the last.

    With ``in_feature="p5", num_levels=1`` this is detectron2's ``LastLevelMaxPool`` (ViTDet's p6).
    """

    def __init__(self, in_feature: str = "p5", num_levels: int = 1) -> None:
        super().__init__()
        self.in_feature = in_feature
        self.num_levels = num_levels

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for _ in range(self.num_levels):
            # kernel 1, stride 2: what LastLevelMaxPool does (a subsampling, no pooling window)
            x = F.max_pool2d(x, kernel_size=1, stride=2, padding=0)
            out.append(x)
        return out
