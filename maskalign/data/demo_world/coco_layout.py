"""A small COCO-2017 look-alike for instance detection and segmentation (ViTDet Mask R-CNN).

Layout and json schema as the real release, so detectron2's ``register_coco_instances`` and
pycocotools read it unchanged::

    coco/train2017/000000000001.jpg
    coco/val2017/000100000001.jpg
    coco/annotations/instances_train2017.json
    coco/annotations/instances_val2017.json

Each annotation describes the *visible* part of its object (later objects occlude earlier ones):
``segmentation`` is exact pixel-corner polygons of that region, ``area`` its pixel count and
``bbox`` its ``[x, y, w, h]`` box, so the three agree exactly. Category ids are 1..K in
:data:`CLASSES` order. Image and annotation ids of val start at 10**8 + 1, so train and val ids
never collide even when both jsons are merged.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ._build import GENERATOR_VERSION, DemoWorldSpec, ensure_layout, parallel_map, save_jpeg, write_json
from .polygons import mask_bbox, mask_to_polygons
from .scene import image_rng, render_scene
from .shapes import CLASSES
from .sizes import sizes_of

SPLITS = (("train", "train2017", 0), ("val", "val2017", 10**8))
MAX_OBJECTS = 4


def categories() -> list[dict[str, Any]]:
    return [{"id": k + 1, "name": name, "supercategory": "shape"} for k, (_, name) in enumerate(CLASSES)]


def _render_to_file(task: tuple[int, str, int, int, str]) -> list[dict[str, Any]]:
    seed, stream, index, size, path = task
    rng = image_rng(seed, stream, index)
    image, masks, classes = render_scene(rng, size, int(rng.integers(1, MAX_OBJECTS + 1)))
    save_jpeg(image, Path(path))
    return [
        {
            "category_id": int(cls) + 1,
            "segmentation": mask_to_polygons(mask),
            "area": float(mask.sum()),
            "bbox": mask_bbox(mask),
            "iscrowd": 0,
        }
        for mask, cls in zip(masks, classes, strict=True)
    ]


def _build_coco(spec: DemoWorldSpec, out: Path) -> None:
    size = spec.image_size
    for split, folder, id_base in SPLITS:
        (out / folder).mkdir(parents=True)
        ids = [id_base + i + 1 for i in range(spec.count(f"{split}_images"))]
        paths = [str(out / folder / f"{image_id:012d}.jpg") for image_id in ids]
        tasks = [(spec.seed, f"coco/{split}", i, size, p) for i, p in enumerate(paths)]
        per_image = parallel_map(_render_to_file, tasks)

        images, annotations = [], []
        ann_id = id_base
        for image_id, path, anns in zip(ids, paths, per_image, strict=True):
            images.append({"id": image_id, "file_name": Path(path).name, "width": size, "height": size})
            for ann in anns:
                ann_id += 1
                annotations.append({"id": ann_id, "image_id": image_id, **ann})
        write_json(
            out / "annotations" / f"instances_{folder}.json",
            {
                "info": {
                    "description": "maskalign demo world: synthetic shapes in COCO layout",
                    "version": str(GENERATOR_VERSION),
                    "year": 2017,
                },
                "licenses": [],
                "images": images,
                "annotations": annotations,
                "categories": categories(),
            },
        )


def ensure_coco(
    root: str | os.PathLike | None = None,
    *,
    image_size: int = 128,
    train_images: int | None = None,
    val_images: int | None = None,
    seed: int = 0,
) -> Path:
    """Make sure ``<root>/coco`` holds this copy (see the module docstring); return that path."""
    counts = tuple(sizes_of("coco", train_images=train_images, val_images=val_images).items())
    return ensure_layout(root, "coco", "coco", image_size, seed, counts, _build_coco)
