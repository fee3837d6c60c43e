"""The objective registry: each method registers its class where it is defined.

    @register_objective("mae")
    class MAE(Objective): ...

``build_objective(cfg)`` looks ``cfg.method`` up, lets the class check its own keys
(``check_config``, a one-line ``ConfigError`` on a wrong one, before any data is read or weights
are loaded) and builds it (``from_config``). Importing :mod:`maskalign.objectives` registers the
built-in methods; a user's method registers by being imported (a test file), or through the
entry-point group ``maskalign.objectives`` of an installed plug-in (:mod:`maskalign.plugins`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from maskalign.config import ConfigError
from maskalign.models.vit import MaskedViT
from maskalign.objectives.base import Objective, missing_hooks
from maskalign.plugins import OBJECTIVES as OBJECTIVE_PLUGINS
from maskalign.plugins import load_plugins

ObjectiveClass = TypeVar("ObjectiveClass", bound=type[Objective])

#: Registry name -> objective class, in registration order.
OBJECTIVES: dict[str, type[Objective]] = {}


def register_objective(name: str) -> Callable[[ObjectiveClass], ObjectiveClass]:
    """Class decorator: make ``cls`` the objective of ``method: name``.

    Refuses (``TypeError``) a class that is no :class:`Objective` or leaves a required hook
    unimplemented, and (``ValueError``) a second class under a name already taken.
    """

    def deco(cls: ObjectiveClass) -> ObjectiveClass:
        if not (isinstance(cls, type) and issubclass(cls, Objective)):
            raise TypeError(f"register_objective({name!r}): {cls!r} is not an Objective subclass")
        missing = missing_hooks(cls)
        if missing:
            raise TypeError(f"objective {name!r} ({cls.__qualname__}) does not implement {', '.join(missing)}")
        old = OBJECTIVES.get(name)
        if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(f"objective {name!r} is already registered by {old.__module__}.{old.__qualname__}")
        # What a class declares about its method is its own: a registered subclass (LUT of MAE)
        # must not report its parent's label or benchmark its parent's recipe.
        for attr, default in (("label", ""), ("extra_method_labels", {}), ("recipes", {})):
            if attr not in cls.__dict__:
                setattr(cls, attr, default)
        cls.name = name
        OBJECTIVES[name] = cls
        return cls

    return deco


def build_student(cfg: Any) -> MaskedViT:
    """The student ViT of ``cfg.student``, refused in one line when its sizes do not fit."""
    from maskalign.models.vit import ARCHS, build_vit

    if cfg.student.arch not in ARCHS:
        raise ConfigError(f"student.arch: unknown {cfg.student.arch!r}; known: {', '.join(ARCHS)}")
    if cfg.student.img_size % cfg.student.patch_size:
        raise ConfigError(f"student.img_size {cfg.student.img_size} is not a multiple of "
                          f"student.patch_size {cfg.student.patch_size}")
    return build_vit(cfg.student.arch, cfg.student.img_size, cfg.student.patch_size, cfg.student.drop_path)


def registered_objectives() -> dict[str, type[Objective]]:
    """Every registered objective by name: the built-ins, then those of installed plug-ins."""
    load_plugins(OBJECTIVE_PLUGINS)
    return dict(OBJECTIVES)


def objective_class(method: str) -> type[Objective]:
    if method not in OBJECTIVES:
        load_plugins(OBJECTIVE_PLUGINS)
    if method not in OBJECTIVES:
        raise ConfigError(f"method: unknown {method!r}; known: {', '.join(sorted(OBJECTIVES))}")
    return OBJECTIVES[method]


def build_objective(cfg: Any) -> Objective:
    """The objective of ``cfg.method``, its keys checked first."""
    cls = objective_class(cfg.method)
    cls.check_config(cfg)
    return cls.from_config(cfg)


def method_labels() -> dict[str, str]:
    """Every method id a registered objective can report -> the label tables print for it."""
    out: dict[str, str] = {}
    for cls in registered_objectives().values():
        out.update(cls.method_labels())
    return out
