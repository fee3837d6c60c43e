"""Objective registry: ``build_objective(cfg)`` turns a resolved pre-training config into a model.

Each builder validates its own combination of settings and refuses a wrong one with a
``ConfigError`` of one line, before any data is read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from maskalign.config import ConfigError
from maskalign.objectives.base import Objective, ObjectiveOutput

__all__ = ["OBJECTIVES", "Objective", "ObjectiveOutput", "build_objective", "register_objective"]

OBJECTIVES: dict[str, Callable[[Any], Objective]] = {}


def register_objective(name: str) -> Callable[[Callable[[Any], Objective]], Callable[[Any], Objective]]:
    def deco(fn: Callable[[Any], Objective]) -> Callable[[Any], Objective]:
        OBJECTIVES[name] = fn
        return fn

    return deco


def build_student(cfg: Any):
    from maskalign.models.vit import ARCHS, build_vit

    if cfg.student.arch not in ARCHS:
        raise ConfigError(f"student.arch: unknown {cfg.student.arch!r}; known: {', '.join(ARCHS)}")
    if cfg.student.img_size % cfg.student.patch_size:
        raise ConfigError(f"student.img_size {cfg.student.img_size} is not a multiple of "
                          f"student.patch_size {cfg.student.patch_size}")
    return build_vit(cfg.student.arch, cfg.student.img_size, cfg.student.patch_size, cfg.student.drop_path)


@register_objective("maskalign")
def _maskalign(cfg: Any) -> Objective:
    from maskalign.objectives.maskalign import MaskAlign
    from maskalign.teachers import build_teacher
    from maskalign.teachers.depth import teacher_depth

    if cfg.teacher.backend == "none":
        raise ConfigError("method=maskalign needs a teacher (teacher.backend is none)")
    if cfg.mask.type not in ("attentive", "random"):
        raise ConfigError(f"mask.type: unknown {cfg.mask.type!r}; use attentive or random")
    if not 0.0 <= cfg.mask.ratio < 1.0:
        raise ConfigError(f"mask.ratio must be in [0, 1), got {cfg.mask.ratio}")
    if cfg.align.type not in ("dynamic", "layerwise"):
        raise ConfigError(f"align.type: unknown {cfg.align.type!r}; use dynamic or layerwise")
    if cfg.align.target_norm not in ("ln", "bn", "batchnorm", "none"):
        raise ConfigError(f"align.target_norm: unknown {cfg.align.target_norm!r}; use ln, bn, batchnorm or none")
    if cfg.align.adaptor not in ("linear", "mlp"):
        raise ConfigError(f"align.adaptor: unknown {cfg.align.adaptor!r}; use linear or mlp")
    depth = teacher_depth(cfg.teacher)
    if depth is not None and not 1 <= cfg.align.top_k <= depth:
        raise ConfigError(f"align.top_k={cfg.align.top_k} is outside 1..{depth}, the teacher's depth")
    encoder = build_student(cfg)
    teacher = build_teacher(cfg.teacher, cfg.student.img_size)
    if not 1 <= cfg.align.top_k <= teacher.depth:
        raise ConfigError(f"align.top_k={cfg.align.top_k} is outside 1..{teacher.depth}, the teacher's depth")
    return MaskAlign(encoder, teacher, mask_type=cfg.mask.type, mask_ratio=cfg.mask.ratio,
                     deterministic_mask=cfg.mask.deterministic, align_type=cfg.align.type,
                     top_k=cfg.align.top_k, adaptor=cfg.align.adaptor,
                     adaptor_position=cfg.align.adaptor_position, target_norm=cfg.align.target_norm,
                     align_cls=cfg.align.cls)


def build_objective(cfg: Any) -> Objective:
    if cfg.method not in OBJECTIVES:
        raise ConfigError(f"method: unknown {cfg.method!r}; known: {', '.join(sorted(OBJECTIVES))}")
    return OBJECTIVES[cfg.method](cfg)
