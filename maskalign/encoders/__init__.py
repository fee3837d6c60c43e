"""Any published ViT, exactly: one loader for every transfer job (see ``load.py`` and the README).

``load_encoder(spec)`` takes a checkpoint file, ``timm:<name>[.tag]`` or
``open_clip:<model>/<tag>`` and returns the family's timm model with every tensor accounted for.
The loader's names are imported on first use, so that ``maskalign.encoders.label`` (used by the
results tables) does not pull in torch and timm.
"""

from __future__ import annotations

import importlib
from typing import Any

_NAMES = {
    "EncoderSpec": "source_spec", "parse_spec": "source_spec",
    "LoadedEncoder": "load", "build_model": "load", "load_encoder": "load", "peek_arch": "load",
    "LoadingReport": "report",
    "encoder_label": "label", "external_label": "label", "is_external": "label",
}
__all__ = ["EncoderSpec", "LoadedEncoder", "LoadingReport", "build_model", "encoder_label",
           "external_label", "is_external", "load_encoder", "parse_spec", "peek_arch"]


def __getattr__(name: str) -> Any:
    if name not in _NAMES:
        raise AttributeError(f"module 'maskalign.encoders' has no attribute {name!r}")
    return getattr(importlib.import_module(f"maskalign.encoders.{_NAMES[name]}"), name)
