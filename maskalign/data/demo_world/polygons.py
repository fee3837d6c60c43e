"""Exact COCO polygons for a binary mask, without OpenCV or scikit-image.

The boundary is traced along pixel *edges* (crack following), so every vertex is a pixel corner
and the polygon's area equals the mask's pixel count exactly -- the annotation's ``area``,
``bbox`` and ``segmentation`` then agree by construction, not within a tolerance.

COCO polygons cannot have holes, yet a ring, or an object with another one in front of its middle,
has them. Each hole is joined to its outer boundary by a zero-width "bridge" walked there and back:
under the even-odd rule (pycocotools' rasteriser) and under the shoelace formula a doubled edge
cancels, so the hole stays empty. Each 4-connected part of the mask becomes one polygon.
"""

from __future__ import annotations

import numpy as np

# Edge directions as (dx, dy) in image coordinates (y down). Each edge keeps the foreground pixel
# on the same side, so outer boundaries come out with negative shoelace area and holes positive.
_LEFT, _DOWN, _RIGHT, _UP = (-1, 0), (0, 1), (1, 0), (0, -1)


def _edges(mask: np.ndarray) -> list[tuple[int, int, int, int, int, int]]:
    """Boundary edges as (x0, y0, x1, y1, row, col) of the foreground pixel each one borders."""
    p = np.pad(mask, 1)
    fg = p[1:-1, 1:-1]
    out = []
    sides = (
        (~p[:-2, 1:-1], (1, 0), _LEFT),  # top side, walked right to left
        (~p[1:-1, :-2], (0, 0), _DOWN),  # left side, walked top to bottom
        (~p[2:, 1:-1], (0, 1), _RIGHT),  # bottom side, walked left to right
        (~p[1:-1, 2:], (1, 1), _UP),  # right side, walked bottom to top
    )
    for bg_beyond, (ox, oy), (dx, dy) in sides:
        rows, cols = np.nonzero(fg & bg_beyond)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            x0, y0 = c + ox, r + oy
            out.append((x0, y0, x0 + dx, y0 + dy, r, c))
    return out


def _trace_loops(mask: np.ndarray) -> list[tuple[list[tuple[int, int]], tuple[int, int]]]:
    """Closed boundary loops as (corner vertices, one foreground pixel (row, col) the loop borders)."""
    edges = _edges(mask)
    by_start: dict[tuple[int, int], list[int]] = {}
    for i, (x0, y0, *_rest) in enumerate(edges):
        by_start.setdefault((x0, y0), []).append(i)
    used = [False] * len(edges)
    loops = []
    for first in range(len(edges)):
        if used[first]:
            continue
        verts: list[tuple[int, int]] = []
        i = first
        while not used[i]:
            used[i] = True
            x0, y0, x1, y1, _, _ = edges[i]
            verts.append((x0, y0))
            nxt = [j for j in by_start[(x1, y1)] if not used[j]]
            if not nxt:
                break
            if len(nxt) > 1:
                # A corner shared by two diagonal pixels: turn tightly around the current pixel, so
                # diagonal neighbours are separate parts (4-connectivity) and loops never cross.
                dx, dy = x1 - x0, y1 - y0
                nxt.sort(key=lambda j: dx * (edges[j][3] - edges[j][1]) - dy * (edges[j][2] - edges[j][0]))
            i = nxt[0]
        loops.append((_drop_collinear(verts), (edges[first][4], edges[first][5])))
    return loops


def _drop_collinear(verts: list[tuple[int, int]]) -> list[tuple[int, int]]:
    n = len(verts)
    keep = []
    for k in range(n):
        (ax, ay), (bx, by), (cx, cy) = verts[k - 1], verts[k], verts[(k + 1) % n]
        if (bx - ax) * (cy - by) - (by - ay) * (cx - bx) != 0:
            keep.append(verts[k])
    return keep


def _signed_area(verts: list[tuple[int, int]]) -> float:
    x = np.array([v[0] for v in verts], dtype=np.float64)
    y = np.array([v[1] for v in verts], dtype=np.float64)
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def _contains(verts: list[tuple[int, int]], px: float, py: float) -> bool:
    """Even-odd test; ``(px, py)`` is a pixel centre, so it never lies on a (corner-aligned) edge."""
    inside = False
    n = len(verts)
    for k in range(n):
        (x0, y0), (x1, y1) = verts[k], verts[(k + 1) % n]
        if (y0 > py) != (y1 > py) and px < x0 + (py - y0) * (x1 - x0) / (y1 - y0):
            inside = not inside
    return inside


def mask_to_polygons(mask: np.ndarray) -> list[list[float]]:
    """COCO ``segmentation`` polygons ``[[x1, y1, x2, y2, ...], ...]`` describing ``mask`` exactly.

    Coordinates are pixel corners (pixel ``(r, c)`` spans ``[c, c+1] x [r, r+1]``), the convention
    of COCO's ``bbox``. One polygon per 4-connected part; holes are bridged in (module docstring).
    """
    mask = np.asarray(mask, dtype=bool)
    outers, holes = [], []
    for verts, (r, c) in _trace_loops(mask):
        area = _signed_area(verts)
        (outers if area < 0 else holes).append((verts, abs(area), (r, c)))
    # A hole belongs to the smallest outer boundary around a foreground pixel next to it; that pixel
    # lies inside its own part's outer boundary and inside those of any parts enclosing that part.
    rings: list[list[tuple[int, int]]] = [list(v) for v, _, _ in outers]
    for hverts, _, (r, c) in holes:
        best, best_area = None, float("inf")
        for k, (overts, oarea, _) in enumerate(outers):
            if oarea < best_area and _contains(overts, c + 0.5, r + 0.5):
                best, best_area = k, oarea
        if best is None:  # cannot happen for a traced mask; keep the output valid regardless
            continue
        anchor = rings[best][0]
        rings[best] += [anchor, *hverts, hverts[0]]
    return [[float(coord) for xy in ring for coord in xy] for ring in rings]


def mask_bbox(mask: np.ndarray) -> list[float]:
    """COCO ``bbox`` ``[x, y, width, height]`` of a non-empty mask, in pixel-corner coordinates."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return [float(cols[0]), float(rows[0]), float(cols[-1] + 1 - cols[0]), float(rows[-1] + 1 - rows[0])]
