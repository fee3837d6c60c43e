"""ViTDet Mask R-CNN with a ViT-B/16 backbone, 100 epochs: ViTDet's own COCO recipe.

The base every other file here is a diff from. Model: detectron2's ``common/models/
mask_rcnn_vitdet.py`` (ViT-B, window attention with global blocks 2/5/8/11, relative position,
simple feature pyramid, LN heads, 4conv1fc box head). Data: LSJ at 1024 (``common/
coco_loader_lsj.py``). Optimizer: AdamW lr 1e-4, wd 0.1, layer decay 0.7, no wd on pos_embed.
Schedule: 184375 iterations at batch 64 (100 epochs of 118k images), steps at 163889 and 177546,
250 warm-up iterations. AMP on GPU. Reported for MAE ViT-B: 51.6 box AP, 45.9 mask AP.

``transfer/coco_vitdet.py --ckpt`` sets ``train.init_checkpoint`` to the converted encoder and
``model.backbone.net.pretrain_img_size`` to its pre-training resolution.
"""

from functools import partial

from detectron2.config import LazyCall as L
from detectron2.modeling.backbone.vit import get_vit_lr_decay_rate
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler

from maskalign.detection.zoo import model_zoo

from .common.coco_loader_lsj import dataloader  # noqa: F401  (kept by LazyConfig)

model = model_zoo.get_config("common/models/mask_rcnn_vitdet.py").model

train = model_zoo.get_config("common/train.py").train
train.amp.enabled = True
train.ddp.fp16_compression = True
train.init_checkpoint = ""  # the converted --ckpt encoder, filled in by transfer/coco_vitdet.py
train.max_iter = 184375  # 100 epochs = 184375 iterations x 64 images / 118k images

lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(
        values=[1.0, 0.1, 0.01],
        milestones=[163889, 177546],
        num_updates=train.max_iter,
    ),
    # A fraction of num_updates, computed here: a file that changes max_iter must reset it.
    warmup_length=250 / train.max_iter,
    warmup_factor=0.001,
)

optimizer = model_zoo.get_config("common/optim.py").AdamW  # lr 1e-4, betas (0.9, 0.999), wd 0.1
optimizer.params.lr_factor_func = partial(get_vit_lr_decay_rate, num_layers=12, lr_decay_rate=0.7)
optimizer.params.overrides = {"pos_embed": {"weight_decay": 0.0}}
