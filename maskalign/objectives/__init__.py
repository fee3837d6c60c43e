"""Pre-training objectives: ``build_objective(cfg)`` turns a resolved config into a model.

Each method registers itself in its own module (``@register_objective("mae")``) and checks its own
config keys; importing this package registers the built-in ones: MaskAlign (and FD, which is
MaskAlign at mask ratio 0), MAE, CrossMAE and LUT. To add one, see ``CONTRIBUTING.md``: one new
module with a registered :class:`Objective` subclass, covered by ``tests/test_registry_contract.py``.
"""

from __future__ import annotations

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

# Imported for their registration; the order is the order tables and benchmarks list them in.
from maskalign.objectives import maskalign as _maskalign  # noqa: E402, F401  isort: skip
from maskalign.objectives import mae as _mae  # noqa: E402, F401  isort: skip
from maskalign.objectives import crossmae as _crossmae  # noqa: E402, F401  isort: skip
from maskalign.objectives import lut as _lut  # noqa: E402, F401  isort: skip

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
