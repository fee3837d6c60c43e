"""How numbers and names are printed in the tables, the way the paper prints them.

Method names come from the objectives' own declarations (``Objective.label``), so a new method
prints its label without an edit here. Ratios are stored as fractions (0.3) and printed as percent
("30%"); accuracies, AP, mIoU and mCE are stored in percent and printed with one decimal; a time
factor prints as "2.8×". A cell whose run has no record prints :data:`MISSING`; a cell that does
not apply is empty (and the paper's own "-" is kept as typed).
"""

from __future__ import annotations

import math
import numbers
import re

import numpy as np

from maskalign.encoders.label import external_label, family_label, is_external

MISSING = "—"
NOT_APPLICABLE = ""

_SIZES = {"tiny": "Ti", "small": "S", "base": "B", "large": "L", "huge": "H", "giant": "g"}


def is_number(v: object) -> bool:
    """A finite real number (numpy scalars included), not a bool, not NaN."""
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) and math.isfinite(float(v))


def percent(fraction: float | None) -> str:
    """0.3 -> "30%", 0.125 -> "12.5%"."""
    if not is_number(fraction):
        return MISSING
    p = float(fraction) * 100.0
    if abs(p - round(p)) < 1e-6:
        return f"{round(p)}%"
    return f"{p:.1f}%"


def one_decimal(v: float | None) -> str:
    return f"{float(v):.1f}" if is_number(v) else MISSING


def integer(v: float | None) -> str:
    return str(round(float(v))) if is_number(v) else MISSING


def times(v: float | None) -> str:
    return f"{float(v):.1f}×" if is_number(v) else MISSING


def seconds(v: float | None) -> str:
    return f"{float(v):.3f}" if is_number(v) else MISSING


def delta(ours: float | None, paper: float | None) -> str:
    """Signed difference of ours (rounded to the printed decimal first) and the paper's number."""
    if not is_number(ours) or not is_number(paper):
        return NOT_APPLICABLE if not is_number(paper) else MISSING
    d = round(round(float(ours), 1) - float(paper), 1) + 0.0  # + 0.0 turns -0.0 into 0.0
    return f"{d:+.1f}"


FORMATS = {"acc": one_decimal, "pct": percent, "int": integer, "times": times, "sec": seconds}


def fmt(v: float | None, kind: str) -> str:
    return FORMATS[kind](v)


def parse_cell(text: str) -> float | None:
    """A typed paper cell to a number in record units: "30%" -> 0.3, "2.8×" -> 2.8, "-" -> None."""
    s = str(text).strip()
    if not s or s in {"-", MISSING}:
        return None
    if s.endswith("%"):
        return float(s[:-1]) / 100.0
    s = s.rstrip("×x").strip()
    try:
        return float(s)
    except ValueError:
        return None


def method_name(method: str) -> str:
    """The label a registered objective declares for ``method`` (``Objective.label``); a published
    encoder's label ("DINOv2-reg-B/14 (external)"); other names (a paper's method, a benchmark's
    cost model) print as they are."""
    from maskalign.objectives import method_labels

    if is_external(method):
        return external_label(method)
    labels, name = method_labels(), str(method)
    return labels.get(name) or labels.get(name.lower(), name)


def row_name(method: str, source_name: str | None = None) -> str:
    """A row's Method cell: the method's label, without the backbone and "(external)" that the Backbone
    column and the file or hub name say (``DeiT III (deit3_small.pth)``, ``MAE (mae_pretrain.pth)``)."""
    if is_external(method):
        label = family_label(method)
    else:
        label = method_name(method)
    return f"{label} ({source_name})" if source_name else label


def backbone_name(backbone: str) -> str:
    """ "vit_base_patch16_224" -> "ViT-B/16", "vit_base" -> "ViT-B"; anything else unchanged."""
    m = re.fullmatch(r"vit_(tiny|small|base|large|huge|giant)(?:_patch(\d+))?(?:_.*)?", str(backbone))
    if w := re.fullmatch(r"vit_d(\d+)_patch(\d+)", str(backbone)):  # a width with no size name
        return f"ViT-w{w.group(1)}/{w.group(2)}"
    if not m:
        return str(backbone)
    name = f"ViT-{_SIZES[m.group(1)]}"
    return f"{name}/{m.group(2)}" if m.group(2) else name


def supervision_name(supervision: str) -> str:
    """Teacher/target names in the paper's style: "clip_vit_b16" -> "CLIP-B", "pixel" -> "RGB"."""
    s = str(supervision)
    low = s.lower().replace("_", "-")
    if low in {"pixel", "pixels", "rgb", "norm-pixel"}:
        return "RGB"
    if low in {"supervised", "self-supervised", "image-text"}:  # an external encoder's, by family or tag
        return {"supervised": "Supervised", "self-supervised": "Self-supervised", "image-text": "Image-text"}[low]
    if low == "external":  # nothing says how a published file was trained
        return "?"
    m = re.fullmatch(r"(clip|dino|dinov2)-(?:vit-)?([bsl])-?(?:/?\d+)?(?:-(\d+))?", low)
    if m:
        name = {"clip": "CLIP", "dino": "DINO", "dinov2": "DINOv2"}[m.group(1)] + "-" + m.group(2).upper()
        return name + (f"@{m.group(3)}" if m.group(3) else "")
    return s
