"""Frozen teachers behind one interface; ``build_teacher`` reads the ``teacher`` config section.

Each backend registers itself in its own module (``@register_teacher("timm")``); importing this
package registers the built-in ones: ``none``, ``open_clip``, ``timm``, ``local`` and ``demo``.
"""

from __future__ import annotations

from maskalign.teachers.base import Teacher, TeacherOutput
from maskalign.teachers.registry import (
    TEACHERS,
    TeacherBackend,
    build_teacher,
    register_teacher,
    registered_teachers,
    teacher_depth,
)

# Imported for their registration (after the registry they register in).
from maskalign.teachers import open_clip_teacher as _open_clip_teacher  # noqa: E402, F401  isort: skip
from maskalign.teachers import timm_teacher as _timm_teacher  # noqa: E402, F401  isort: skip
from maskalign.teachers import demo_teacher as _demo_teacher  # noqa: E402, F401  isort: skip

__all__ = ["TEACHERS", "Teacher", "TeacherBackend", "TeacherOutput", "build_teacher", "register_teacher",
           "registered_teachers", "teacher_depth"]
