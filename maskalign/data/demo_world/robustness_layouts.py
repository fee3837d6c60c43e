"""Small copies of the ImageNet robustness benchmarks, in the layouts their releases unpack to.

Each copy draws the demo world's classes with the same scene renderer as the demo ImageNet, but
shifted the way its real counterpart is shifted, so a classifier fine-tuned on the demo ImageNet
has something to be robust *to*:

* ``imagenet-a/<wnid>/*.jpg`` -- hard examples: small objects in heavy clutter, partly occluded.
  A subset of the classes (``DEMO_SUBSETS``), as the real set covers 200 of 1000.
* ``imagenet-r/<wnid>/*.jpg`` -- renditions: cartoons, colour-inverted photos, edge drawings.
  Another subset of the classes.
* ``imagenet-sketch/sketch/<wnid>/*.JPEG`` -- grayscale pencil sketches, every class.
* ``imagenetv2-matched-frequency-format-val/<i>/<hash>.jpeg`` -- fresh photos from a new stream,
  folders named by class *index* ``0..K-1`` (the real set's trap: a string sort scrambles them).
* ``imagenet-c/<corruption>/<severity>/<wnid>/*.JPEG`` -- the 15 common corruptions x 5 severities
  of the ``imagecorruptions`` package, applied to clean photos (the real set applies them to the
  224-px center crops of ImageNet val).

Every copy is deterministic (the corruption noise is seeded per image, corruption and severity),
built once per root in a temporary folder and renamed into place under a lock, with a marker that
records what was built (see ``_build``).
"""

from __future__ import annotations

import hashlib
import os
import zlib
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ._build import DemoWorldSpec, ensure_built, parallel_map, save_jpeg
from .paths import resolve_root
from .scene import image_rng, render_classification_image
from .shapes import CLASSES, WNIDS

_VERSION = 1

# The demo's ImageNet-A / -R class subsets (wnids), two different proper subsets of the 10 classes,
# as the real ones are two different 200-class subsets of the 1000.
DEMO_SUBSETS: dict[str, tuple[str, ...]] = {
    "imagenet_a": tuple(WNIDS[i] for i in (1, 2, 3, 5, 7, 9)),
    "imagenet_r": tuple(WNIDS[i] for i in (0, 1, 3, 4, 6, 8, 9)),
}

# Folder names of the public releases once unpacked (the paths a user passes for real data).
LAYOUT_DIRS = {
    "imagenet_a": "imagenet-a",
    "imagenet_r": "imagenet-r",
    "imagenet_sketch": "imagenet-sketch",
    "imagenet_v2": "imagenetv2-matched-frequency-format-val",
    "imagenet_c": "imagenet-c",
}

COMMON_CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)


# ---- renditions --------------------------------------------------------------------------------

def _occlude(rng: np.random.Generator, img: np.ndarray, count: int) -> np.ndarray:
    """Opaque rectangles of random colour: occluders in front of the scene."""
    out = img.copy()
    size = img.shape[0]
    for _ in range(count):
        h, w = (rng.uniform(0.15, 0.35, 2) * size).astype(int) + 1
        y, x = rng.integers(0, size - h + 1), rng.integers(0, size - w + 1)
        out[y:y + h, x:x + w] = (rng.random(3) * 255).astype(np.uint8)
    return out


def render_hard(rng: np.random.Generator, size: int, class_idx: int) -> np.ndarray:
    """ImageNet-A look-alike: a small object among many distractors, partly hidden."""
    img = render_classification_image(rng, size, class_idx, scale=(0.18, 0.3), clutter=int(rng.integers(16, 28)))
    return _occlude(rng, img, int(rng.integers(1, 3)))


def _edges(img: np.ndarray) -> np.ndarray:
    """Dark lines where the image has strong gradients, on white: an edges-only drawing."""
    g = img.astype(np.float32).mean(axis=2)
    gx = np.zeros_like(g)
    gy = np.zeros_like(g)
    gx[:, 1:-1] = g[:, 2:] - g[:, :-2]
    gy[1:-1, :] = g[2:, :] - g[:-2, :]
    mag = np.hypot(gx, gy)
    ink = np.clip(mag / max(np.percentile(mag, 97), 1e-6), 0, 1)
    return np.repeat((255 * (1 - ink))[:, :, None], 3, axis=2).astype(np.uint8)


def render_rendition(rng: np.random.Generator, size: int, class_idx: int, index: int) -> np.ndarray:
    """ImageNet-R look-alike: cartoon, colour-inverted photo or edge drawing (cycling by index)."""
    kind = index % 3
    if kind == 0:
        return render_classification_image(rng, size, class_idx, style="cartoon")
    photo = render_classification_image(rng, size, class_idx, clutter=int(rng.integers(0, 4)))
    return 255 - photo if kind == 1 else _edges(photo)


def render_sketch(rng: np.random.Generator, size: int, class_idx: int) -> np.ndarray:
    """ImageNet-Sketch look-alike: a grayscale (2-D) pencil sketch."""
    img = render_classification_image(rng, size, class_idx, style="sketch")
    return np.round(img.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.uint8)


# ---- writers -----------------------------------------------------------------------------------

def _render_task(task: tuple[str, int, str, int, int, int, str]) -> None:
    kind, seed, stream, class_idx, index, size, path = task
    rng = image_rng(seed, stream, class_idx, index)
    if kind == "hard":
        img = render_hard(rng, size, class_idx)
    elif kind == "rendition":
        img = render_rendition(rng, size, class_idx, index)
    elif kind == "sketch":
        img = render_sketch(rng, size, class_idx)
    else:
        img = render_classification_image(rng, size, class_idx)
    save_jpeg(img, Path(path))


def _write_folders(out: Path, kind: str, spec: DemoWorldSpec, classes: list[int], folder_name: Any,
                   file_name: Any) -> None:
    per_class = spec.count("per_class")
    tasks = []
    for c in classes:
        folder = out / folder_name(c)
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            tasks.append((kind, spec.seed, spec.layout, c, i, spec.image_size, str(folder / file_name(c, i))))
    parallel_map(_render_task, tasks)


def _subset_classes(name: str) -> list[int]:
    return [WNIDS.index(w) for w in DEMO_SUBSETS[name]]


def _build_simple(name: str, spec: DemoWorldSpec, out: Path) -> None:
    if name == "imagenet_a":
        _write_folders(out, "hard", spec, _subset_classes(name), lambda c: WNIDS[c],
                       lambda c, i: f"{i:04d}_{WNIDS[c]}.jpg")
    elif name == "imagenet_r":
        _write_folders(out, "rendition", spec, _subset_classes(name), lambda c: WNIDS[c],
                       lambda c, i: f"{['cartoon', 'inverted', 'edges'][i % 3]}_{i}.jpg")
    elif name == "imagenet_sketch":
        _write_folders(out / "sketch", "sketch", spec, list(range(len(CLASSES))), lambda c: WNIDS[c],
                       lambda c, i: f"sketch_{i + 1}.JPEG")
    elif name == "imagenet_v2":
        _write_folders(out, "photo", spec, list(range(len(CLASSES))), str,
                       lambda c, i: hashlib.sha1(f"{spec.seed}/{c}/{i}".encode()).hexdigest() + ".jpeg")
    else:
        raise ValueError(name)


# ---- ImageNet-C --------------------------------------------------------------------------------

def _corruption_seed(seed: int, corruption: str, severity: int, class_idx: int, index: int) -> int:
    return int(np.random.default_rng([seed, zlib.crc32(corruption.encode()), severity, class_idx, index])
               .integers(2**31 - 1))


def corrupt_image(img: np.ndarray, corruption: str, severity: int, seed: int) -> np.ndarray:
    """``imagecorruptions.corrupt`` made deterministic: numpy's global generator and the ``seed``
    argument of the two corruptions that take one are both set from ``seed``."""
    from imagecorruptions import corrupt

    np.random.seed(seed)
    kwargs = {"seed": seed} if corruption in ("glass_blur", "impulse_noise") else {}
    return corrupt(img, severity=severity, corruption_name=corruption, **kwargs)


def _corrupt_task(task: tuple[int, str, int, int, int, str]) -> None:
    seed, corruption, class_idx, index, size, out = task
    clean = render_classification_image(image_rng(seed, "imagenet-c/clean", class_idx, index), size, class_idx)
    state = np.random.get_state()
    try:
        for severity in range(1, 6):
            img = corrupt_image(clean, corruption, severity, _corruption_seed(seed, corruption, severity, class_idx,
                                                                              index))
            folder = Path(out) / corruption / str(severity) / WNIDS[class_idx]
            folder.mkdir(parents=True, exist_ok=True)
            save_jpeg(img, folder / f"ILSVRC2012_val_{class_idx * 1000 + index + 1:08d}.JPEG")
    finally:
        np.random.set_state(state)


def _build_c(spec: DemoWorldSpec, out: Path) -> None:
    tasks = [(spec.seed, c, k, i, spec.image_size, str(out))
             for c in COMMON_CORRUPTIONS for k in range(len(CLASSES)) for i in range(spec.count("per_class"))]
    parallel_map(_corrupt_task, tasks)


def _corruptions_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("imagecorruptions-imaug", "imagecorruptions"):
        try:
            return f"{dist}-{version(dist)}"
        except PackageNotFoundError:
            continue
    return "none"


# ---- entry points ------------------------------------------------------------------------------

def ensure_robustness_set(name: str, root: str | os.PathLike | None = None, *, image_size: int = 64,
                          per_class: int | None = None, seed: int = 0) -> Path:
    """Build (once) the demo copy of one benchmark and return the folder a loader reads.

    ``name`` is ``imagenet_a``, ``imagenet_r``, ``imagenet_sketch``, ``imagenet_v2`` or
    ``imagenet_c``. ``per_class`` defaults to 20 images (ImageNet-C: 4 clean images per class,
    each in 15 x 5 versions). The returned folder holds the class folders (ImageNet-C: the
    corruption folders), exactly what a user passes for the real release.
    """
    if name not in LAYOUT_DIRS:
        raise ValueError(f"unknown robustness set {name!r}; one of {sorted(LAYOUT_DIRS)}")
    if name == "imagenet_c":
        n = 4 if per_class is None else per_class
        spec = DemoWorldSpec(f"imagenet-c/v{_VERSION}/{_corruptions_version()}", image_size, seed,
                             (("per_class", n),))
        build = partial(_build_c, spec)
    else:
        spec = DemoWorldSpec(f"{LAYOUT_DIRS[name]}/v{_VERSION}", image_size, seed,
                             (("per_class", 20 if per_class is None else per_class),))
        build = partial(_build_simple, name, spec)
    target = ensure_built(resolve_root(root) / "robustness" / LAYOUT_DIRS[name], spec, build)
    return target / "sketch" if name == "imagenet_sketch" else target

