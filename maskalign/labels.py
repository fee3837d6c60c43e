"""How runs are named in tables: backbone and method labels derived from configs, never typed."""

from __future__ import annotations

_ARCH_LABEL = {"vit_tiny_demo": "ViT-demo", "vit_tiny": "ViT-Ti", "vit_small": "ViT-S", "vit_base": "ViT-B",
               "vit_large": "ViT-L"}


def backbone_label(arch: str, patch_size: int) -> str:
    return f"{_ARCH_LABEL.get(arch, arch)}/{patch_size}"
