"""How an encoder not pre-trained here is named in records and tables: "DINOv2-reg-B/14 (external)".

A record's ``method`` for such an encoder is ``external:<family>:<backbone>`` (e.g.
``external:dinov2_reg:vit_base_patch14``) and its ``backbone`` the usual ``vit_<size>_patch<p>``,
so that tables give each published encoder a row of its own and never mix it with this project's
pre-training runs.
"""

from __future__ import annotations

import re
from typing import Any

PREFIX = "external:"
# Dependency-free (the results tables import this module without torch).
FAMILY_LABELS = {"vit": "ViT", "dinov2": "DINOv2", "dinov2_reg": "DINOv2-reg", "clip": "CLIP",
                 "clip_quickgelu": "CLIP", "deit3": "DeiT III", "deit_distilled": "DeiT-distilled", "beit": "BEiT"}
_SIZE_BY_WIDTH = {192: "tiny", 384: "small", 768: "base", 1024: "large", 1280: "huge", 1408: "giant",
                  1536: "giant", 1664: "gigantic"}
_LETTER = {"tiny": "Ti", "small": "S", "base": "B", "large": "L", "huge": "H", "giant": "g", "gigantic": "G"}


def backbone_name(arch: dict[str, Any]) -> str:
    """``vit_base_patch14`` for a 768-wide patch-14 encoder; ``vit_d64_patch8`` for a width with no size name."""
    dim = int(arch["embed_dim"])
    return f"vit_{_SIZE_BY_WIDTH.get(dim, f'd{dim}')}_patch{int(arch['patch_size'])}"


def external_method(family: str, arch: dict[str, Any]) -> str:
    return f"{PREFIX}{family}:{backbone_name(arch)}"


def is_external(method: object) -> bool:
    return str(method).startswith(PREFIX)


def family_label(method: str) -> str:
    """``external:dinov2_reg:vit_base_patch14`` -> ``DINOv2-reg``: the family alone, for a table row
    whose Backbone column gives the size."""
    family = (str(method).split(":") + ["", ""])[1]
    return FAMILY_LABELS.get(family, family or str(method))


def external_label(method: str) -> str:
    """``external:dinov2_reg:vit_base_patch14`` -> ``DINOv2-reg-B/14 (external)``."""
    _, family, backbone = (str(method).split(":") + ["", ""])[:3]
    name = FAMILY_LABELS.get(family, family)
    m = re.fullmatch(r"vit_(\w+?)_patch(\d+)", backbone)
    if not m:
        return f"{name} (external)"
    size = _LETTER.get(m.group(1), m.group(1))
    return f"{name}-{size}/{m.group(2)} (external)"


def encoder_label(meta: dict[str, Any]) -> str:
    """The row label of a loaded encoder's metadata: external ones by family, this project's by method."""
    method = str(meta.get("method", "unknown"))
    if is_external(method):
        return external_label(method)
    return f"{method} {backbone_name(meta['arch'])}" if "arch" in meta else method
