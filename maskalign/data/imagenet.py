"""ImageNet in its folder layout (``<root>/<split>/<wnid>/*.JPEG``), robust to bad files.

A corrupt or unreadable image is reported once, by path, as a warning and replaced by the next
readable sample, so one bad JPEG among 1.28M does not end a 200-epoch run. A missing or empty
split folder, or a class folder without images, is refused up front with one line naming it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from torchvision.datasets import ImageFolder

from maskalign.data.layout import check_split_dir
from maskalign.errors import DataError


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
