"""MAE's weight initialisation, shared by the student ViT, the pixel decoders and LUT's heads.

As ``facebookresearch/mae`` ``_init_weights``: every ``nn.Linear`` xavier-uniform with bias 0,
every ``nn.LayerNorm`` weight 1 and bias 0. Other layers keep PyTorch's defaults.
"""

from __future__ import annotations

import torch.nn as nn


def init_linear_and_norm(*modules: nn.Module) -> None:
    """Initialise, in module order, every Linear and LayerNorm under ``modules``."""
    for module in modules:
        for m in module.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
