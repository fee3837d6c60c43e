"""Student networks: the ViT encoder every objective trains and exports."""

from maskalign.models.vit import ARCHS, MaskedViT, build_vit

__all__ = ["ARCHS", "MaskedViT", "build_vit"]
