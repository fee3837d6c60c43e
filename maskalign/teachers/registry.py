"""The teacher registry: each backend registers its builder where it is defined.

    @register_teacher("timm", depth=_depth_from_name)
    def _build(cfg, student_img_size): ...

``build_teacher(cfg, student_img_size)`` reads the ``teacher`` config section (``backend``,
``name``, ``pretrained``, ``checkpoint``, ``input_size``, ``label``) and calls the backend's builder;
``teacher_depth(cfg)`` asks the backend for the teacher's depth from the config alone, so that a
wrong ``align.top_k`` fails before any weights are downloaded (``None``: not known before building).
The backend ``none`` (no teacher, the pixel objectives) is registered here; installed plug-ins add
backends through the entry-point group ``maskalign.teachers`` (:mod:`maskalign.plugins`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from maskalign.config import ConfigError
from maskalign.plugins import TEACHERS as TEACHER_PLUGINS
from maskalign.plugins import load_plugins
from maskalign.teachers.base import Teacher

Builder = Callable[[Any, int], "Teacher | None"]
DepthFn = Callable[[Any], "int | None"]


def _unknown_depth(cfg: Any) -> int | None:
    return None


@dataclass(frozen=True)
class TeacherBackend:
    name: str
    build: Builder
    depth: DepthFn = _unknown_depth


#: Backend name (``teacher.backend``) -> its builder and depth rule, in registration order.
TEACHERS: dict[str, TeacherBackend] = {}


def register_teacher(name: str, *, depth: DepthFn = _unknown_depth) -> Callable[[Builder], Builder]:
    """Decorator: make ``build(cfg, student_img_size)`` the builder of ``teacher.backend: name``."""

    def deco(build: Builder) -> Builder:
        old = TEACHERS.get(name)
        if old is not None and (old.build.__module__, old.build.__qualname__) != (build.__module__,
                                                                                  build.__qualname__):
            raise ValueError(f"teacher backend {name!r} is already registered by {old.build.__module__}")
        TEACHERS[name] = TeacherBackend(name, build, depth)
        return build

    return deco


def registered_teachers() -> dict[str, TeacherBackend]:
    """Every registered backend by name: the built-ins, then those of installed plug-ins."""
    load_plugins(TEACHER_PLUGINS)
    return dict(TEACHERS)


def _backend(cfg: Any) -> TeacherBackend:
    if cfg.backend not in TEACHERS:
        load_plugins(TEACHER_PLUGINS)
    if cfg.backend not in TEACHERS:
        raise ConfigError(f"teacher.backend: unknown {cfg.backend!r}; use {', '.join(TEACHERS)}")
    return TEACHERS[cfg.backend]


def build_teacher(cfg: Any, student_img_size: int) -> Teacher | None:
    """The frozen teacher of the ``teacher`` config section (``None`` for backend ``none``)."""
    return _backend(cfg).build(cfg, student_img_size)


def teacher_depth(cfg: Any) -> int | None:
    """The teacher's block count from its config alone, where the backend knows it."""
    return _backend(cfg).depth(cfg)


@register_teacher("none")
def _no_teacher(cfg: Any, student_img_size: int) -> None:
    return None
