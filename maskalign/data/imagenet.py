"""ImageNet in its folder layout (``<root>/<split>/<wnid>/*.JPEG``), robust to bad files.

A corrupt or unreadable image is reported once, by path, as a warning and replaced by the next
readable sample, so one bad JPEG among 1.28M does not end a 200-epoch run. A missing or empty
split folder, or a class folder without images, is refused up front with one line naming it.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS as READABLE

from maskalign.errors import DataError

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def check_split_dir(root: Path, split: str) -> Path:
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


def _pil_rgb(path: str) -> Image.Image:
    with open(path, "rb") as f:
        img = Image.open(f)
        img.load()
        return img.convert("RGB")


class SafeImageFolder(ImageFolder):
    """``ImageFolder`` that skips (with a warning naming the file) images it cannot decode."""

    def __init__(self, root: str | Path, transform: Callable | None = None,
                 class_to_idx: dict[str, int] | None = None) -> None:
        self._fixed_classes = class_to_idx
        try:
            super().__init__(str(root), transform=transform, loader=_pil_rgb, allow_empty=False)
        except FileNotFoundError as e:  # torchvision: a class folder without images, or none at all
            raise DataError(f"{root}: {str(e).splitlines()[0] if str(e) else 'no class folders'}") from None
        self._warned: set[str] = set()

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        if self._fixed_classes is not None:
            # ImageNet-V2 names its folders 0..999: a string sort would scramble the labels.
            classes = sorted(self._fixed_classes, key=self._fixed_classes.__getitem__)
            return classes, dict(self._fixed_classes)
        return super().find_classes(directory)

    def __getitem__(self, index: int):
        for attempt in range(len(self.samples)):
            i = (index + attempt) % len(self.samples)
            path = self.samples[i][0]
            try:
                return super().__getitem__(i)
            except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
                if path not in self._warned:
                    self._warned.add(path)
                    warnings.warn(f"skipping unreadable image {path}: {e}", RuntimeWarning, stacklevel=2)
        raise DataError(f"{self.root}: no readable image at all")


def image_folder(root: str | Path, split: str, transform: Callable | None = None) -> SafeImageFolder:
    return SafeImageFolder(check_split_dir(Path(root), split), transform=transform)
