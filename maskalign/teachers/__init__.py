"""Frozen teachers behind one interface; ``build_teacher`` reads the ``teacher`` config section.

Each backend registers itself in its own module (``@register_teacher("timm")``); importing this
package registers the built-in ones (``none``, ``open_clip``, ``timm``, ``local``, ``demo``) and any
other module of the package, found without an edit here.
"""

from __future__ import annotations

import importlib
import pkgutil

from maskalign.teachers.base import Teacher, TeacherOutput
from maskalign.teachers.registry import (
    TEACHERS,
    TeacherBackend,
    build_teacher,
    register_teacher,
    registered_teachers,
    teacher_depth,
)

# Every module of this package is imported for its registration (a new backend is one new module,
# no edit here); the built-ins first.
_FIRST = ("open_clip_teacher", "timm_teacher", "demo_teacher")
_HELPERS = ("base", "registry")
for _name in (*_FIRST, *sorted({m.name for m in pkgutil.iter_modules(__path__)} - set(_FIRST) - set(_HELPERS))):
    importlib.import_module(f"{__name__}.{_name}")

__all__ = ["TEACHERS", "Teacher", "TeacherBackend", "TeacherOutput", "build_teacher", "register_teacher",
           "registered_teachers", "teacher_depth"]
