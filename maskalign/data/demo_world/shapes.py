"""The object classes of the demo world: one canonical 2-D shape per class.

Class identity is the silhouette alone. Colour, texture, size, rotation and position are drawn at
random per instance, so a model can only score well by learning shape. The shapes are picked so
that none becomes another under rotation or uniform scaling (no "diamond": it is a turned square).

Each shape is an inside-test on canonical coordinates ``(u, v)``, both in [-1, 1] with ``v``
pointing down as in images; every shape fits inside the unit disc, so an instance of radius ``R``
fits in a ``2R`` square around its centre whatever its rotation.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

# Sorted wnid order is the class index order, as for ImageNet's folder-sorted labels. The 9xxxxxxx
# offsets can never collide with a real WordNet id.
CLASSES: list[tuple[str, str]] = [
    ("n90000000", "disc"),
    ("n90000001", "square"),
    ("n90000002", "triangle"),
    ("n90000003", "star"),
    ("n90000004", "ring"),
    ("n90000005", "cross"),
    ("n90000006", "hexagon"),
    ("n90000007", "crescent"),
    ("n90000008", "ellipse"),
    ("n90000009", "heart"),
]
NUM_CLASSES = len(CLASSES)
CLASS_NAMES: list[str] = [name for _, name in CLASSES]
WNIDS: list[str] = [wnid for wnid, _ in CLASSES]

Inside = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _polygon_inside(vertices: list[tuple[float, float]]) -> Inside:
    """Even-odd inside test for a fixed polygon, vectorised over the sample points."""
    vx = np.array([p[0] for p in vertices], dtype=np.float32)
    vy = np.array([p[1] for p in vertices], dtype=np.float32)

    def inside(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        result = np.zeros(u.shape, dtype=bool)
        n = len(vx)
        for i in range(n):
            x0, y0, x1, y1 = vx[i], vy[i], vx[(i + 1) % n], vy[(i + 1) % n]
            if y0 == y1:
                continue  # horizontal edges never cross a horizontal ray
            crosses = (y0 > v) != (y1 > v)
            x_at = x0 + (v - y0) * (x1 - x0) / (y1 - y0)
            result ^= crosses & (u < x_at)
        return result

    return inside


def _regular_polygon(n: int, radius: float, start_deg: float) -> list[tuple[float, float]]:
    return [
        (
            radius * math.cos(math.radians(start_deg + 360.0 * k / n)),
            radius * math.sin(math.radians(start_deg + 360.0 * k / n)),
        )
        for k in range(n)
    ]


def _star(points: int, outer: float, inner: float) -> list[tuple[float, float]]:
    verts = []
    for k in range(2 * points):
        r = outer if k % 2 == 0 else inner
        a = math.radians(-90.0 + 180.0 * k / points)
        verts.append((r * math.cos(a), r * math.sin(a)))
    return verts


def _cross(arm: float, half_width: float) -> list[tuple[float, float]]:
    a, w = arm, half_width
    return [
        (-w, -a),
        (w, -a),
        (w, -w),
        (a, -w),
        (a, w),
        (w, w),
        (w, a),
        (-w, a),
        (-w, w),
        (-a, w),
        (-a, -w),
        (-w, -w),
    ]


def _disc(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return u * u + v * v <= 0.92**2


def _ring(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    r2 = u * u + v * v
    return (r2 <= 0.95**2) & (r2 >= 0.55**2)


def _crescent(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return (u * u + v * v <= 0.95**2) & ((u - 0.42) ** 2 + v * v > 0.75**2)


def _ellipse(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return (u / 0.95) ** 2 + (v / 0.48) ** 2 <= 1.0


def _heart(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # The classic sextic heart curve; y points up there, so flip v, and shift it to centre the lobes.
    x = u * 1.25
    y = -v * 1.25 + 0.12
    return (x * x + y * y - 1.0) ** 3 - x * x * y**3 <= 0.0


_INSIDE: dict[str, Inside] = {
    "disc": _disc,
    "square": _polygon_inside(_regular_polygon(4, 0.95, 45.0)),
    # Point up (v negative); a regular triangle's centroid is its circumcentre, so it stays centred.
    "triangle": _polygon_inside(_regular_polygon(3, 1.0, -90.0)),
    "star": _polygon_inside(_star(5, 1.0, 0.42)),
    "ring": _ring,
    "cross": _polygon_inside(_cross(0.92, 0.3)),
    "hexagon": _polygon_inside(_regular_polygon(6, 0.95, 0.0)),
    "crescent": _crescent,
    "ellipse": _ellipse,
    "heart": _heart,
}
assert list(_INSIDE) == CLASS_NAMES


def shape_inside(class_idx: int) -> Inside:
    """The inside-test of class ``class_idx`` on canonical coordinates (see the module docstring)."""
    return _INSIDE[CLASS_NAMES[class_idx]]


def shape_coverage_crop(
    class_idx: int,
    size: tuple[int, int],
    center: tuple[float, float],
    radius: float,
    angle: float,
    supersample: int = 3,
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Like :func:`shape_coverage`, but only over the instance's box: ``(crop, (y0, y1, x0, x1))``.

    Small instances (clutter) then cost in proportion to their own size, not the image's.
    """
    h, w = size
    cx, cy = center
    x0, x1 = max(math.floor(cx - radius) - 1, 0), min(math.ceil(cx + radius) + 1, w)
    y0, y1 = max(math.floor(cy - radius) - 1, 0), min(math.ceil(cy + radius) + 1, h)
    if x0 >= x1 or y0 >= y1:
        return np.zeros((0, 0), dtype=np.float32), (0, 0, 0, 0)
    s = supersample
    offs = (np.arange(s, dtype=np.float32) + 0.5) / s
    xs = (np.arange(x0, x1, dtype=np.float32)[:, None] + offs[None, :]).reshape(-1)
    ys = (np.arange(y0, y1, dtype=np.float32)[:, None] + offs[None, :]).reshape(-1)
    dx = xs[None, :] - np.float32(cx)
    dy = ys[:, None] - np.float32(cy)
    c, sn = np.float32(math.cos(angle)), np.float32(math.sin(angle))
    u = (dx * c + dy * sn) / np.float32(radius)
    v = (-dx * sn + dy * c) / np.float32(radius)
    hit = shape_inside(class_idx)(u, v).astype(np.float32)
    return hit.reshape(y1 - y0, s, x1 - x0, s).mean(axis=(1, 3)), (y0, y1, x0, x1)


def shape_coverage(
    class_idx: int,
    size: tuple[int, int],
    center: tuple[float, float],
    radius: float,
    angle: float,
    supersample: int = 3,
) -> np.ndarray:
    """Fraction of each pixel covered by one shape instance, as float32 ``(H, W)`` in [0, 1].

    ``center`` is ``(x, y)`` in pixels (pixel ``(r, c)`` spans ``[c, c+1) x [r, r+1)``), ``radius``
    in pixels, ``angle`` in radians. Sub-pixel samples give anti-aliased edges for compositing;
    thresholding at 0.5 gives the hard mask the annotations describe.
    """
    cov = np.zeros(size, dtype=np.float32)
    crop, (y0, y1, x0, x1) = shape_coverage_crop(class_idx, size, center, radius, angle, supersample)
    cov[y0:y1, x0:x1] = crop
    return cov
