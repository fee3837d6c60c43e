"""ViTDet Mask R-CNN with a ViT-L/16 backbone, 100 epochs, as a diff from the ViT-B file.

ViT-L: 1024 wide, 24 blocks, 16 heads, global attention in blocks 5/11/17/23 (window attention
elsewhere), drop path 0.4, layer decay 0.8 over 24 layers. Reported for MAE ViT-L: 55.5 box AP,
49.2 mask AP.
"""

from functools import partial

from detectron2.modeling.backbone.vit import get_vit_lr_decay_rate

from .mask_rcnn_vitdet_b_100ep import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401  (the names LazyConfig keeps)

model.backbone.net.embed_dim = 1024
model.backbone.net.depth = 24
model.backbone.net.num_heads = 16
model.backbone.net.drop_path_rate = 0.4
model.backbone.net.window_block_indexes = [i for i in range(24) if i % 6 != 5]

optimizer.params.lr_factor_func = partial(get_vit_lr_decay_rate, num_layers=24, lr_decay_rate=0.8)
