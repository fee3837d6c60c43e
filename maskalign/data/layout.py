"""The ImageFolder layout a data root must have (``<root>/<split>/<class>/<image>``), checked cheaply.

This is what the submitting process runs before ``sbatch`` and what a job runs before building its
data set: a missing or empty split folder, or a class folder without one readable image, is one
line naming it. It imports neither torch nor torchvision (seconds per process), so a submission or
a refused path answers at once; :mod:`maskalign.data.imagenet` reads the images.
"""

from __future__ import annotations

import os
from pathlib import Path

from maskalign.errors import DataError

#: What torchvision's ``ImageFolder`` reads (``torchvision.datasets.folder.IMG_EXTENSIONS``), spelled
#: out so that checking a layout does not import torchvision; tests/test_preflight_data.py keeps the two equal.
READABLE = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def check_split_dir(root: Path, split: str) -> Path:
    """``root/split``, if it holds class folders and each holds at least one readable image."""
    d = Path(root) / split
    if not d.is_dir():
        raise DataError(f"data folder not found: {d} (expected <root>/{split}/<class>/<image>.JPEG)")
    classes = sorted(p for p in d.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"data folder {d} has no class folders (expected <root>/{split}/<class>/<image>.JPEG)")
    for cls in classes:  # one entry per folder is enough: an empty class stops here, not mid-epoch
        if not _has_image(cls):
            raise DataError(f"{cls}: class folder holds no image file ({', '.join(READABLE[:3])}, ...); "
                            "add its images or remove the folder")
    return d


def _has_image(folder: Path) -> bool:
    with os.scandir(folder) as entries:
        return any(e.name.lower().endswith(READABLE) for e in entries)
