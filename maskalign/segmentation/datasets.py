"""The ADE20K (SceneParsing, ``ADEChallengeData2016``) layout, checked before a job starts.

The layout, for the real release and the demo world's copy alike::

    ADEChallengeData2016/images/{training,validation}/*.jpg
    ADEChallengeData2016/annotations/{training,validation}/*.png   (same stem; class index per pixel)

Annotation pixels hold 0 ("other", ignored: mmseg's ``reduce_zero_label`` maps it to 255) or a
class 1..K; 255 is also accepted as "ignore". K is 150 for the real data, or the number of entries
after "0" in a ``classes.json`` beside ``images/`` (the demo world writes one).

:func:`check_layout` reads every pair once (image header, annotation pixels) and stops at the
first problem with one line naming the file: a missing split folder, an image without its
annotation, an annotation whose size differs from its image, a class index outside the label set.
Nothing here imports mmseg.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from maskalign.errors import DataError

TRAIN, VAL = "training", "validation"
ADE20K_NUM_CLASSES = 150
IGNORE_INDEX = 255
CLASSES_FILE = "classes.json"


def resolve_root(path: str | os.PathLike) -> Path:
    """``path`` itself if it holds ``images/``, else ``path/ADEChallengeData2016`` if that exists."""
    p = Path(path).expanduser()
    if not p.is_dir():
        raise DataError(f"{p}: no such data folder (expected an ADEChallengeData2016 tree)")
    if not (p / "images").is_dir() and (p / "ADEChallengeData2016").is_dir():
        return p / "ADEChallengeData2016"
    return p


def class_names(root: str | os.PathLike) -> tuple[str, ...] | None:
    """The K class names from ``classes.json`` (``{"0": "other", "1": ..., ...}``), or None if absent."""
    f = Path(root) / CLASSES_FILE
    if not f.is_file():
        return None
    try:
        table = json.loads(f.read_text())
        ids = sorted(int(k) for k in table)
    except (OSError, ValueError, TypeError, AttributeError) as e:
        raise DataError(f"{f}: unreadable class table ({e})") from None
    if not ids or ids != list(range(ids[0], ids[-1] + 1)) or ids[0] not in (0, 1):
        raise DataError(f"{f}: class ids must run 0 (other), 1..K without gaps")
    return tuple(str(table[str(i)]) for i in ids if i > 0)


def num_classes(root: str | os.PathLike) -> int:
    names = class_names(root)
    return ADE20K_NUM_CLASSES if names is None else len(names)


def _check_pair(pair: tuple[Path, Path, int]) -> str | None:
    image, ann, k = pair
    if not ann.is_file():
        return f"{ann}: missing annotation for image {image.name}"
    try:
        with Image.open(image) as im:
            isize = im.size
    except Exception as e:  # noqa: BLE001  (PIL raises several types for broken files)
        return f"{image}: not a readable image ({type(e).__name__}: {str(e)[:120]})"
    try:
        with Image.open(ann) as im:
            asize, mode = im.size, im.mode
            labels = np.asarray(im) if mode in ("L", "P") else None
    except Exception as e:  # noqa: BLE001
        return f"{ann}: not a readable annotation PNG ({type(e).__name__}: {str(e)[:120]})"
    if labels is None:
        return f"{ann}: annotation must be a single-channel PNG of class indices (mode L or P), got mode {mode}"
    if asize != isize:
        return (f"{ann}: annotation is {asize[0]}x{asize[1]} but its image {image.name} is "
                f"{isize[0]}x{isize[1]}")
    values = np.unique(labels)
    bad = values[(values > k) & (values != IGNORE_INDEX)]
    if bad.size:
        return (f"{ann}: class index {int(bad[0])} outside the label set 0..{k} "
                f"(0 = other, 1..{k} classes, {IGNORE_INDEX} = ignore)")
    return None


def check_layout(root: str | os.PathLike, splits: tuple[str, ...] = (TRAIN, VAL),
                 workers: int | None = None) -> dict[str, int]:
    """Check the ADE20K layout under ``root`` (module docstring); return the image count per split."""
    root = resolve_root(root)
    k = num_classes(root)
    counts: dict[str, int] = {}
    for split in splits:
        for kind in ("images", "annotations"):
            d = root / kind / split
            if not d.is_dir():
                raise DataError(f"{d}: missing split folder (expected images/{{{TRAIN},{VAL}}} and "
                                   f"annotations/{{{TRAIN},{VAL}}} under {root})")
        images = sorted((root / "images" / split).glob("*.jpg"))
        if not images:
            raise DataError(f"{root / 'images' / split}: no .jpg images")
        pairs = [(im, root / "annotations" / split / f"{im.stem}.png", k) for im in images]
        with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
            for problem in pool.map(_check_pair, pairs, chunksize=64):
                if problem:
                    raise DataError(problem)
        counts[split] = len(images)
    return counts
