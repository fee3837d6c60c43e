"""The demo world: small synthetic copies of ImageNet, COCO and ADE20K in their real layouts.

None of the real datasets exists on the machines this project is tested on, yet every pipeline
(pre-training, fine-tuning, detection, segmentation, robustness) must run end to end and show that
pre-training helps. So one seeded renderer draws scenes of ~10 shape classes over busy backgrounds
and writes them in exactly the public layouts; the same code then reads the demo copies and the
real data. Copies are deterministic (same seed and sizes, same bytes), built once per root and
safe to request from many processes at once.
"""

from ._build import GENERATOR_VERSION, DemoWorldSpec, ensure_built, parallel_map
from .ade20k_layout import ensure_ade20k
from .coco_layout import ensure_coco
from .imagenet_layout import ensure_imagenet, write_class_folders
from .paths import ROOT_ENV, default_root
from .polygons import mask_bbox, mask_to_polygons
from .scene import STYLES, image_rng, render_classification_image, render_scene
from .shapes import CLASS_NAMES, CLASSES, NUM_CLASSES, WNIDS

__all__ = [
    "CLASSES",
    "CLASS_NAMES",
    "GENERATOR_VERSION",
    "NUM_CLASSES",
    "ROOT_ENV",
    "STYLES",
    "WNIDS",
    "DemoWorldSpec",
    "default_root",
    "ensure_ade20k",
    "ensure_built",
    "ensure_coco",
    "ensure_imagenet",
    "image_rng",
    "mask_bbox",
    "mask_to_polygons",
    "parallel_map",
    "render_classification_image",
    "render_scene",
    "write_class_folders",
]
