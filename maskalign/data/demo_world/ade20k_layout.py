"""A small ADE20K (SceneParsing, ADEChallengeData2016) look-alike for semantic segmentation.

Layout as the real release, so mmsegmentation's ``ADE20KDataset`` reads it unchanged::

    ADEChallengeData2016/images/training/ADE_train_00000001.jpg
    ADEChallengeData2016/images/validation/ADE_val_00000001.jpg
    ADEChallengeData2016/annotations/training/ADE_train_00000001.png
    ADEChallengeData2016/annotations/validation/ADE_val_00000001.png
    ADEChallengeData2016/classes.json   {"0": "other", "1": "disc", ...}

Annotations are 8-bit single-channel PNGs of the same basename: 0 is "other" (background and
clutter), 1..K the classes in :data:`CLASSES` order. As in the real data, 0 is meant to be ignored
(mmseg's ``reduce_zero_label=True`` maps it to 255 and the classes to 0..K-1).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ._build import DemoWorldSpec, ensure_layout, parallel_map, save_jpeg, save_label_png
from .scene import image_rng, render_scene
from .shapes import CLASS_NAMES
from .sizes import sizes_of

SPLITS = (("train", "training"), ("val", "validation"))
# More objects than the COCO copy: scene parsing labels every pixel, so denser scenes teach more.
OBJECTS = (2, 6)


def class_table() -> dict[str, str]:
    return {"0": "other", **{str(k + 1): name for k, name in enumerate(CLASS_NAMES)}}


def _render_to_files(task: tuple[int, str, int, int, str, str]) -> None:
    seed, stream, index, size, image_path, label_path = task
    rng = image_rng(seed, stream, index)
    image, masks, classes = render_scene(rng, size, int(rng.integers(OBJECTS[0], OBJECTS[1] + 1)))
    labels = np.zeros((size, size), dtype=np.uint8)
    for mask, cls in zip(masks, classes, strict=True):  # visible masks are disjoint, so order does not matter
        labels[mask] = cls + 1
    save_jpeg(image, Path(image_path))
    save_label_png(labels, Path(label_path))


def _build_ade20k(spec: DemoWorldSpec, out: Path) -> None:
    for split, folder in SPLITS:
        images, annotations = out / "images" / folder, out / "annotations" / folder
        images.mkdir(parents=True)
        annotations.mkdir(parents=True)
        tasks = []
        for i in range(spec.count(f"{split}_images")):
            stem = f"ADE_{split}_{i + 1:08d}"
            tasks.append(
                (
                    spec.seed,
                    f"ade20k/{split}",
                    i,
                    spec.image_size,
                    str(images / f"{stem}.jpg"),
                    str(annotations / f"{stem}.png"),
                )
            )
        parallel_map(_render_to_files, tasks)
    (out / "classes.json").write_text(json.dumps(class_table(), indent=1) + "\n")


def ensure_ade20k(
    root: str | os.PathLike | None = None,
    *,
    image_size: int = 128,
    train_images: int | None = None,
    val_images: int | None = None,
    seed: int = 0,
) -> Path:
    """Make sure ``<root>/ADEChallengeData2016`` holds this copy (module docstring); return it."""
    counts = tuple(sizes_of("ade20k", train_images=train_images, val_images=val_images).items())
    return ensure_layout(root, "ADEChallengeData2016", "ade20k", image_size, seed, counts, _build_ade20k)
