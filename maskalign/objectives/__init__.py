"""Pre-training objectives: ``build_objective(cfg)`` turns a resolved config into a model.

Each method registers itself in its own module (``@register_objective("mae")``) and checks its own
config keys; importing this package registers the built-in ones: MaskAlign (and FD, which is
MaskAlign at mask ratio 0), MAE, CrossMAE and LUT. To add one, see ``CONTRIBUTING.md``: one new
module with a registered :class:`Objective` subclass (found by this package without an edit here),
covered by ``tests/test_registry_contract.py``.
"""

from __future__ import annotations

import importlib
import pkgutil

from maskalign.objectives.base import Objective, ObjectiveOutput
from maskalign.objectives.registry import (
    OBJECTIVES,
    build_objective,
    build_student,
    method_labels,
    objective_class,
    register_objective,
    registered_objectives,
)

# Every module of this package is imported for its registration (a new objective is one new module,
# no edit here); the built-ins first, in the order tables and benchmarks list them.
_FIRST = ("maskalign", "mae", "crossmae", "lut")
_HELPERS = ("base", "registry", "pixels")
for _name in (*_FIRST, *sorted({m.name for m in pkgutil.iter_modules(__path__)} - set(_FIRST) - set(_HELPERS))):
    importlib.import_module(f"{__name__}.{_name}")

__all__ = [
    "OBJECTIVES",
    "Objective",
    "ObjectiveOutput",
    "build_objective",
    "build_student",
    "method_labels",
    "objective_class",
    "registered_objectives",
    "register_objective",
]
