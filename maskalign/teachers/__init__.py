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
        if not cfg.checkpoint:
            raise ValueError("teacher.backend=local needs teacher.checkpoint")
        return _local(cfg.checkpoint, cfg.input_size or None, cfg.label)
    if backend == "demo":
        from maskalign.teachers.demo_teacher import ensure_demo_teacher

        return _local(ensure_demo_teacher(), cfg.input_size or None, cfg.label)
    raise ValueError(f"unknown teacher.backend {backend!r}; use open_clip, timm, local or none")


def _local(path: Any, input_size: int | None, label: str | None) -> Teacher:
    """A teacher file of this project: an exported ViT encoder, or a demo teacher (token CNN)."""
    from maskalign.teachers.demo_teacher import is_token_cnn, load_demo_teacher
    from maskalign.teachers.timm_teacher import local_teacher

    if is_token_cnn(path):
        return load_demo_teacher(path, input_size, label)
    return local_teacher(path, input_size, label)
