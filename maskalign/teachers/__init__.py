"""Frozen teachers behind one interface; ``build_teacher`` reads the ``teacher`` config section."""

from __future__ import annotations

from typing import Any

from maskalign.teachers.base import Teacher, TeacherOutput

__all__ = ["Teacher", "TeacherOutput", "build_teacher"]


def build_teacher(cfg: Any, student_img_size: int) -> Teacher | None:
    """``cfg`` has ``backend`` (open_clip | timm | local | demo | none), ``name``, ``pretrained``,
    ``checkpoint``, ``input_size`` (null: the student's resolution, or CLIP's own) and ``label``."""
    backend = cfg.backend
    if backend == "none":
        return None
    if backend == "open_clip":
        from maskalign.teachers.open_clip_teacher import OpenClipTeacher

        return OpenClipTeacher(cfg.name, cfg.pretrained, cfg.input_size or student_img_size, cfg.label)
    if backend == "timm":
        from maskalign.teachers.timm_teacher import timm_teacher

        return timm_teacher(cfg.name, bool(cfg.pretrained), cfg.input_size or None, cfg.label)
    if backend == "local":
        from maskalign.teachers.timm_teacher import local_teacher

        if not cfg.checkpoint:
            raise ValueError("teacher.backend=local needs teacher.checkpoint")
        return local_teacher(cfg.checkpoint, cfg.input_size or None, cfg.label)
    if backend == "demo":
        from maskalign.teachers.demo_teacher import ensure_demo_teacher
        from maskalign.teachers.timm_teacher import local_teacher

        return local_teacher(ensure_demo_teacher(), cfg.input_size or None, cfg.label)
    raise ValueError(f"unknown teacher.backend {backend!r}; use open_clip, timm, local or none")
