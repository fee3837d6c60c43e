"""ViTDet's COCO data loading: large-scale jitter (LSJ) at 1024 px, RGB, batch 64.

The model zoo's ``common/data/coco.py`` (train on ``coco_2017_train``, test on ``coco_2017_val``,
COCOEvaluator) with ViTDet's augmentations in place of the FPN recipe's multi-scale resize. As in
ViTDet, crops are not padded here: the backbone's ``square_pad`` pads every image to 1024.
"""

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L

from maskalign.detection.zoo import model_zoo

dataloader = model_zoo.get_config("common/data/coco.py").dataloader

image_size = 1024
dataloader.train.mapper.augmentations = [
    L(T.RandomFlip)(horizontal=True),
    L(T.ResizeScale)(min_scale=0.1, max_scale=2.0, target_height=image_size, target_width=image_size),
    L(T.FixedSizeCrop)(crop_size=(image_size, image_size), pad=False),
]
dataloader.train.mapper.image_format = "RGB"
dataloader.train.mapper.recompute_boxes = True  # boxes from the cropped masks, not cropped boxes
dataloader.train.total_batch_size = 64
dataloader.test.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=image_size, max_size=image_size),
]
