"""A small ImageNet-1k look-alike: one JPEG class folder per (fake) wnid, plus list files.

Layout, as torchvision's ``ImageFolder`` and mmpretrain's ImageNet readers expect it::

    imagenet/train/n90000000/n90000000_1.JPEG
    imagenet/val/n90000000/ILSVRC2012_val_00000001.JPEG   (val sorted into class folders)
    imagenet/meta/train.txt   "n90000000/n90000000_1.JPEG 0"  (path relative to the split folder)
    imagenet/meta/val.txt
    imagenet/meta/classes.json  {wnid: name}
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._build import DemoWorldSpec, ensure_layout, parallel_map, save_jpeg
from .scene import image_rng, render_classification_image
from .shapes import CLASSES
from .sizes import sizes_of


def _render_to_file(task: tuple[int, str, int, int, int, str, dict[str, Any]]) -> None:
    seed, stream, class_idx, index, size, path, kwargs = task
    rng = image_rng(seed, stream, class_idx, index)
    save_jpeg(render_classification_image(rng, size, class_idx, **kwargs), Path(path))


def write_class_folders(
    split_dir: Path,
    *,
    stream: str,
    seed: int,
    image_size: int,
    per_class: int,
    file_name: Callable[[str, int, int], str],
    **render_kwargs: Any,
) -> list[str]:
    """Write ``per_class`` JPEGs into ``split_dir/<wnid>/`` for every class.

    ``file_name(wnid, class_idx, index)`` names each file. Image ``index`` of a class depends only
    on ``(seed, stream, class_idx, index)``, so growing ``per_class`` keeps the existing images.
    ``render_kwargs`` go to :func:`render_classification_image` (``style``, ``scale``, ``clutter``),
    which lets robustness copies (ImageNet-R/-Sketch/-V2 look-alikes) share this writer.
    Returns the list-file lines ``"<wnid>/<file> <label>"``.
    """
    tasks, lines = [], []
    for class_idx, (wnid, _) in enumerate(CLASSES):
        folder = split_dir / wnid
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            name = file_name(wnid, class_idx, index)
            tasks.append((seed, stream, class_idx, index, image_size, str(folder / name), render_kwargs))
            lines.append(f"{wnid}/{name} {class_idx}")
    parallel_map(_render_to_file, tasks)
    return lines


def _build_imagenet(spec: DemoWorldSpec, out: Path) -> None:
    val_per_class = spec.count("val_per_class")
    names = {
        "train": lambda wnid, c, i: f"{wnid}_{i + 1}.JPEG",
        # ImageNet's val files are numbered across the whole split.
        "val": lambda wnid, c, i: f"ILSVRC2012_val_{c * val_per_class + i + 1:08d}.JPEG",
    }
    meta = out / "meta"
    meta.mkdir()
    for split, count in (("train", spec.count("train_per_class")), ("val", val_per_class)):
        lines = write_class_folders(
            out / split,
            stream=f"imagenet/{split}",
            seed=spec.seed,
            image_size=spec.image_size,
            per_class=count,
            file_name=names[split],
        )
        (meta / f"{split}.txt").write_text("".join(line + "\n" for line in lines))
    (meta / "classes.json").write_text(json.dumps(dict(CLASSES), indent=1) + "\n")


def ensure_imagenet(
    root: str | os.PathLike | None = None,
    *,
    image_size: int = 64,
    train_per_class: int | None = None,
    val_per_class: int | None = None,
    seed: int = 0,
) -> Path:
    """Make sure ``<root>/imagenet`` holds this copy (see the module docstring); return that path.

    Counts not given come from the demo-world size (:mod:`.sizes`: 120 + 30 per class in full).
    """
    counts = tuple(sizes_of("imagenet", train_per_class=train_per_class, val_per_class=val_per_class).items())
    return ensure_layout(root, "imagenet", "imagenet", image_size, seed, counts, _build_imagenet)
