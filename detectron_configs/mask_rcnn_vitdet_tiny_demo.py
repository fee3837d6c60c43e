"""ViTDet Mask R-CNN shrunk to train on the demo world's COCO copy on 2 CPU cores in 5-10 minutes.

A diff from the ViT-B recipe that changes sizes only, never structure: the same window/global
ViT with relative position, simple feature pyramid, LN heads, LSJ and layer decay.

* Backbone: the demo encoder (``maskalign.models`` ``vit_tiny_demo``: 96 wide, 6 blocks, 3 heads,
  patch 8, pre-trained at 64 px). ``maskalign.backbone = "from_checkpoint"`` lets
  ``transfer/coco_vitdet.py`` take width, depth, heads, patch and pre-training size from the
  checkpoint's metadata instead (the ViT-B/L files instead refuse a checkpoint that does not fit).
  Global attention in blocks 2 and 5, 8 x 8 windows elsewhere.
* Patch 8 gives a stride-8 map, so the pyramid uses scale factors (2, 1, 0.5) for p2..p4 and
  max-pools p4 twice for p5, p6 (see ``maskalign.detection.modeling``). FPN width 256 and the box
  head's fc 1024 stay: detectron2's Mask R-CNN wires them into its input shapes.
* Images: the demo world's 128 px; LSJ and test resize at 128, anchors halved (16..256) for its
  small objects; 64 ROIs per image, fewer proposals.
* 100 iterations at batch 4, lr 2e-4 with 10 warm-up iterations; no AMP; one evaluation at the end.
"""

from functools import partial

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.modeling.backbone.vit import get_vit_lr_decay_rate

from maskalign.detection.modeling import SCALE_FACTORS as _SCALE_FACTORS
from maskalign.detection.modeling import MaxPoolLevels

from .mask_rcnn_vitdet_b_100ep import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401  (the names LazyConfig keeps)

maskalign = dict(backbone="from_checkpoint")

image_size = 128
_net = model.backbone.net
_net.img_size = image_size
_net.patch_size = 8
_net.embed_dim = 96
_net.depth = 6
_net.num_heads = 3
_net.drop_path_rate = 0.1
_net.window_size = 8
_net.window_block_indexes = [0, 1, 3, 4]
_net.pretrain_img_size = 64
model.backbone.square_pad = image_size
model.backbone.scale_factors = _SCALE_FACTORS[8]
model.backbone.top_block = L(MaxPoolLevels)(in_feature="p4", num_levels=2)

model.proposal_generator.anchor_generator.sizes = [[16], [32], [64], [128], [256]]
model.proposal_generator.pre_nms_topk = (600, 300)
model.proposal_generator.post_nms_topk = (300, 100)
model.roi_heads.batch_size_per_image = 64
model.roi_heads.num_classes = 10  # the demo world's shapes; always set from the data's categories

dataloader.train.mapper.augmentations = [
    L(T.RandomFlip)(horizontal=True),
    L(T.ResizeScale)(min_scale=0.5, max_scale=1.5, target_height=image_size, target_width=image_size),
    L(T.FixedSizeCrop)(crop_size=(image_size, image_size), pad=False),
]
dataloader.test.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=image_size, max_size=image_size),
]
dataloader.train.total_batch_size = 4
dataloader.train.num_workers = 0
dataloader.test.num_workers = 0

train.max_iter = 100
train.amp.enabled = False
train.ddp.fp16_compression = False
train.device = "auto"
train.checkpointer.period = 40
train.checkpointer.max_to_keep = 2
train.eval_period = 0
train.log_period = 10

lr_multiplier.scheduler.milestones = [80, 95]
lr_multiplier.scheduler.num_updates = train.max_iter
lr_multiplier.warmup_length = 10 / train.max_iter

optimizer.lr = 2e-4
optimizer.params.lr_factor_func = partial(get_vit_lr_decay_rate, num_layers=6, lr_decay_rate=0.8)
