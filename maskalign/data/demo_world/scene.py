"""The one scene renderer behind every demo-world layout.

Classification images (ImageNet layout) and multi-object scenes (COCO, ADE20K layouts) come from
the same code, so an object a model learns to recognise in one layout is the same kind of thing it
detects or segments in another -- which is what makes transfer from pre-training measurable here.

Everything is drawn with numpy into float32 images in [0, 1] and depends only on the ``rng`` passed
in, so a per-image generator (see :func:`image_rng`) makes each file reproducible on its own, in
any order and in any process.
"""

from __future__ import annotations

import math
import zlib

import numpy as np

from .shapes import NUM_CLASSES, shape_coverage, shape_coverage_crop

STYLES = ("photo", "sketch", "cartoon")


def image_rng(seed: int, stream: str, *index: int) -> np.random.Generator:
    """The generator of one image: a pure function of (seed, stream name, index).

    ``stream`` names the layout and split (e.g. ``"imagenet/train"``); crc32 rather than ``hash``
    because Python salts string hashes per process.
    """
    return np.random.default_rng([int(seed), zlib.crc32(stream.encode()), *map(int, index)])


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.random(3).astype(np.float32)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    return coords[None, :], coords[:, None]  # x (1, W), y (H, 1), both in (0, 1)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int, channels: int) -> np.ndarray:
    """Value noise: a coarse random grid blown up bilinearly, shape ``(size, size, channels)``."""
    coarse = rng.random((cells + 1, cells + 1, channels)).astype(np.float32)
    pos = (np.arange(size, dtype=np.float32) + 0.5) / size * cells
    i = np.minimum(pos.astype(np.int64), cells - 1)
    f = (pos - i)[:, None]
    rows = coarse[i] * (1 - f[:, :, None]) + coarse[i + 1] * f[:, :, None]  # (size, cells+1, C)
    fx = (pos - i)[None, :, None]
    return rows[:, i] * (1 - fx) + rows[:, i + 1] * fx


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    x, y = _grid(size)
    kind = rng.integers(4)
    # Busy but of lower contrast than the objects, so there is always a figure to find.
    c0 = _random_colour(rng)
    c1 = np.clip(c0 + rng.uniform(-0.35, 0.35, 3), 0, 1).astype(np.float32)
    if kind == 0:  # linear gradient
        a = rng.uniform(0, 2 * math.pi)
        t = np.clip((x - 0.5) * math.cos(a) + (y - 0.5) * math.sin(a) + 0.5, 0, 1)
    elif kind == 1:  # blotchy value noise
        t = _smooth_noise(rng, size, int(rng.integers(2, 7)), 1)[:, :, 0]
    elif kind == 2:  # soft stripes
        a = rng.uniform(0, math.pi)
        freq = rng.uniform(2, 7)
        t = 0.5 + 0.5 * np.sin(2 * math.pi * freq * (x * math.cos(a) + y * math.sin(a)) + rng.uniform(0, 6.3))
    else:  # coloured noise field, no single dominant pair of colours
        return 0.3 + 0.4 * _smooth_noise(rng, size, int(rng.integers(2, 6)), 3)
    t = np.broadcast_to(t, (size, size))[:, :, None]
    return (c0 * (1 - t) + c1 * t).astype(np.float32)


def _composite(img: np.ndarray, alpha: np.ndarray, layer: np.ndarray) -> None:
    a = alpha[:, :, None]
    img *= 1 - a
    img += a * layer


def _erode(alpha: np.ndarray, steps: int) -> np.ndarray:
    """Min-filter over the 4-neighbourhood, ``steps`` times: the inside of an outline."""
    out = alpha
    for _ in range(steps):
        p = np.pad(out, 1, mode="constant")
        out = np.minimum.reduce([p[1:-1, 1:-1], p[:-2, 1:-1], p[2:, 1:-1], p[1:-1, :-2], p[1:-1, 2:]])
    return out


def _clutter(rng: np.random.Generator, img: np.ndarray, count: int) -> None:
    """Small blobs and thin bars: edges and colour everywhere, but no class silhouette at scale."""
    size = img.shape[0]
    for _ in range(count):
        r = rng.uniform(0.015, 0.06) * size
        centre = (rng.uniform(0, size), rng.uniform(0, size))
        if rng.random() < 0.7:  # a small ellipse
            cov, (y0, y1, x0, x1) = shape_coverage_crop(8, (size, size), centre, r, rng.uniform(0, math.pi))
        else:
            cov, (y0, y1, x0, x1) = _bar_crop(
                size, centre, rng.uniform(0.1, 0.3) * size, rng.uniform(0.6, 1.5), rng.uniform(0, math.pi)
            )
        strength, colour = rng.uniform(0.3, 0.8), _random_colour(rng)
        _composite(img[y0:y1, x0:x1], cov * strength, colour)


def _bar_crop(
    size: int, centre: tuple[float, float], length: float, width: float, angle: float
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    half = length / 2 + width
    x0, x1 = max(int(centre[0] - half), 0), min(int(centre[0] + half) + 1, size)
    y0, y1 = max(int(centre[1] - half), 0), min(int(centre[1] + half) + 1, size)
    if x0 >= x1 or y0 >= y1:
        return np.zeros((0, 0), dtype=np.float32), (0, 0, 0, 0)
    dx = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5 - centre[0]
    dy = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5 - centre[1]
    along = dx * math.cos(angle) + dy * math.sin(angle)
    across = -dx * math.sin(angle) + dy * math.cos(angle)
    inside = (np.abs(along) <= length / 2) & (np.abs(across) <= width / 2)
    return inside.astype(np.float32), (y0, y1, x0, x1)


def _contrasting_colour(rng: np.random.Generator, img: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """A fill colour that stands out from what lies under the object, so every instance is visible."""
    w = cov.sum()
    under = (img * cov[:, :, None]).sum(axis=(0, 1)) / w if w > 0 else img.mean(axis=(0, 1))
    colour = _random_colour(rng)
    for _ in range(8):
        if np.linalg.norm(colour - under) >= 0.5:
            return colour
        colour = _random_colour(rng)
    return np.where(under > 0.5, 0.1, 0.9).astype(np.float32)


Box = tuple[int, int, int, int]  # (y0, y1, x0, x1) of a crop inside the image


def _fill_layer(
    rng: np.random.Generator,
    under: np.ndarray,
    cov: np.ndarray,
    box: Box,
    centre: tuple[float, float],
    radius: float,
) -> np.ndarray:
    """The object's surface over its box: solid, two-tone stripes or a gradient, with shading."""
    y0, y1, x0, x1 = box
    shape = (y1 - y0, x1 - x0)
    base = _contrasting_colour(rng, under, cov)
    dx = (np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5 - centre[0]) / radius
    dy = (np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5 - centre[1]) / radius
    kind = rng.integers(3)
    if kind == 0:
        layer = np.broadcast_to(base, (*shape, 3))
    else:
        other = np.clip(base + rng.uniform(-0.45, 0.45, 3).astype(np.float32), 0, 1)
        a = rng.uniform(0, 2 * math.pi)
        proj = dx * math.cos(a) + dy * math.sin(a)
        if kind == 1:
            t = (np.sin(proj * rng.uniform(4, 9)) > 0).astype(np.float32)
        else:
            t = np.clip(proj * 0.5 + 0.5, 0, 1)
        layer = base * (1 - t[:, :, None]) + other * t[:, :, None]
    la = rng.uniform(0, 2 * math.pi)
    shade = 1.0 + rng.uniform(0, 0.35) * (dx * math.cos(la) + dy * math.sin(la))
    return np.clip(layer * shade[:, :, None], 0, 1).astype(np.float32)


def _paint_object(
    rng: np.random.Generator,
    img: np.ndarray,
    class_idx: int,
    centre: tuple[float, float],
    radius: float,
    angle: float,
    crop: tuple[np.ndarray, Box] | None = None,
) -> None:
    """Draw one instance onto ``img`` in place; ``crop`` is its coverage if already computed."""
    size = img.shape[0]
    if crop is None:
        crop = shape_coverage_crop(class_idx, (size, size), centre, radius, angle)
    cov, box = crop
    y0, y1, x0, x1 = box
    under = img[y0:y1, x0:x1]  # a view: painting it paints the image
    fill = _fill_layer(rng, under, cov, box, centre, radius)
    if rng.random() < 0.4:  # a darker rim on some instances, as objects in photos often have
        inner = _erode(cov, 1)
        _composite(under, cov - inner, fill * rng.uniform(0.2, 0.6))
        _composite(under, inner, fill)
    else:
        _composite(under, cov, fill)


def _finish(rng: np.random.Generator, img: np.ndarray, noise: float | None = None) -> np.ndarray:
    """Global photometric jitter and sensor noise, then quantise to uint8."""
    sigma = rng.uniform(0.0, 0.05) if noise is None else noise
    gain, bias = rng.uniform(0.8, 1.15), rng.uniform(-0.08, 0.08)
    out = img * gain + bias
    if sigma > 0:
        out = out + rng.normal(0.0, sigma, img.shape).astype(np.float32)
    return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)


def render_classification_image(
    rng: np.random.Generator,
    size: int,
    class_idx: int,
    *,
    style: str = "photo",
    scale: tuple[float, float] = (0.26, 0.45),
    clutter: int | None = None,
) -> np.ndarray:
    """One object of class ``class_idx`` on a busy background, as ``(size, size, 3)`` uint8 RGB.

    ``scale`` bounds the object's radius as a fraction of ``size``; ``clutter`` fixes the number of
    distractor blobs (default: 1 to 6). ``style`` changes the rendition, not the content:
    ``"photo"`` (textured, shaded, noisy), ``"sketch"`` (grey outline and hatching on paper) and
    ``"cartoon"`` (flat colours, thick outline) -- what ImageNet-R/-Sketch style copies need.
    """
    if not 0 <= class_idx < NUM_CLASSES:
        raise ValueError(f"class_idx {class_idx} outside 0..{NUM_CLASSES - 1}")
    if style not in STYLES:
        raise ValueError(f"style {style!r} not one of {STYLES}")
    radius = rng.uniform(*scale) * size
    # Keep most of the object inside the frame: classification labels assume it is visible.
    margin = 0.75 * radius
    centre = (rng.uniform(margin, size - margin), rng.uniform(margin, size - margin))
    angle = rng.uniform(0, 2 * math.pi)
    n_clutter = int(rng.integers(1, 7)) if clutter is None else clutter

    if style == "photo":
        img = _background(rng, size)
        _clutter(rng, img, n_clutter)
        _paint_object(rng, img, class_idx, centre, radius, angle)
        return _finish(rng, img)

    cov = shape_coverage(class_idx, (size, size), centre, radius, angle)
    if style == "sketch":
        paper = rng.uniform(0.85, 1.0)
        img = paper - 0.06 * _smooth_noise(rng, size, 8, 1)
        img = np.repeat(img, 3, axis=2)
        ink = rng.uniform(0.0, 0.35)
        width = 1 + int(size >= 96)
        outline = cov - _erode(cov, width)
        x, y = _grid(size)
        a = rng.uniform(0, math.pi)
        hatch = np.sin((x * math.cos(a) + y * math.sin(a)) * size * rng.uniform(0.6, 1.2)) > 0.7
        hatch_alpha = _erode(cov, width) * hatch.astype(np.float32) * rng.uniform(0.0, 0.6)
        _composite(img, np.maximum(outline, hatch_alpha), np.full(3, ink, np.float32))
        return _finish(rng, img, noise=0.01)

    # cartoon
    img = np.broadcast_to(_random_colour(rng) * 0.5 + 0.45, (size, size, 3)).astype(np.float32).copy()
    fill = _contrasting_colour(rng, img, cov)
    width = 1 + max(1, size // 48)
    inner = _erode(cov, width)
    _composite(img, cov - inner, np.zeros(3, np.float32))
    _composite(img, inner, fill)
    return _finish(rng, img, noise=0.0)


def render_scene(
    rng: np.random.Generator,
    size: int,
    n_objects: int,
    *,
    class_ids: list[int] | None = None,
    scale: tuple[float, float] = (0.1, 0.28),
    min_visible: float = 0.4,
    min_pixels: int = 24,
    max_tries: int = 20,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A scene of up to ``n_objects`` instances, painted back to front over a busy background.

    Returns ``(image, masks, classes)``: ``(size, size, 3)`` uint8 RGB, ``(n, size, size)`` bool
    *visible* masks in painting order (later instances occlude earlier ones), and ``(n,)`` int64
    class indices. Placements are re-drawn until every instance keeps at least ``min_visible`` of
    its area and ``min_pixels`` pixels in view; an instance that cannot be placed is left out, so
    ``n <= n_objects`` (the first is always placed, however small the image). ``class_ids`` fixes
    the classes, otherwise each is drawn uniformly.
    """
    if class_ids is not None and len(class_ids) != n_objects:
        raise ValueError("class_ids must have n_objects entries")
    img = _background(rng, size)
    _clutter(rng, img, int(rng.integers(2, 13)))

    full: list[np.ndarray] = []  # hard masks as drawn, before occlusion
    visible: list[np.ndarray] = []
    classes: list[int] = []
    for k in range(n_objects):
        cls = int(rng.integers(NUM_CLASSES)) if class_ids is None else int(class_ids[k])
        for _ in range(max_tries):
            radius = rng.uniform(*scale) * size
            centre = (rng.uniform(0.1, 0.9) * size, rng.uniform(0.1, 0.9) * size)
            angle = rng.uniform(0, 2 * math.pi)
            crop, (y0, y1, x0, x1) = shape_coverage_crop(cls, (size, size), centre, radius, angle)
            mask = np.zeros((size, size), dtype=bool)
            mask[y0:y1, x0:x1] = crop >= 0.5
            # The first instance only has to be visible at all: no scene is left without an object.
            if mask.sum() < (min_pixels if visible else 1):
                continue
            if all(
                (v & ~mask).sum() >= max(min_visible * f.sum(), min_pixels)
                for v, f in zip(visible, full, strict=True)
            ):
                break
        else:
            continue
        _paint_object(rng, img, cls, centre, radius, angle, (crop, (y0, y1, x0, x1)))
        visible = [v & ~mask for v in visible]
        full.append(mask)
        visible.append(mask.copy())
        classes.append(cls)

    masks = np.stack(visible) if visible else np.zeros((0, size, size), dtype=bool)
    return _finish(rng, img), masks, np.asarray(classes, dtype=np.int64)
