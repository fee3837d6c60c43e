"""A teacher's depth from its config alone, so that wrong settings fail before weights load."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

# Depths of the ViT towers the paper uses; other names are checked once the model is built.
_OPEN_CLIP_DEPTHS = {"ViT-B-16": 12, "ViT-B-32": 12, "ViT-L-14": 24, "ViT-L-14-336": 24, "ViT-H-14": 32}


def teacher_depth(cfg: Any) -> int | None:
    if cfg.backend == "open_clip":
        return _OPEN_CLIP_DEPTHS.get(cfg.name)
    if cfg.backend == "timm" and cfg.name:
        m = re.match(r"vit_(tiny|small|base|large|huge)_", cfg.name)
        return {"tiny": 12, "small": 12, "base": 12, "large": 24, "huge": 32}[m.group(1)] if m else None
    if cfg.backend == "local" and cfg.checkpoint:
        side = Path(cfg.checkpoint).with_suffix(".json")
        if side.is_file():
            try:
                return int(json.loads(side.read_text())["arch"]["depth"])
            except (KeyError, ValueError, TypeError):
                return None
    if cfg.backend == "demo":
        from maskalign.teachers.demo_teacher import DEMO_TEACHER_ARCH

        return DEMO_TEACHER_ARCH["depth"]
    return None
