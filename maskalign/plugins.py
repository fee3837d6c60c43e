"""Plug-ins: packages installed beside this one add tasks, objectives and teachers without edits here.

A plug-in declares, in its own ``pyproject.toml``, the modules that register its additions::

    [project.entry-points."maskalign.tasks"]
    knn_like = "my_protocols.knn_like"          # a module with an @register_task class

    [project.entry-points."maskalign.objectives"]
    cosine_fd = "my_methods.cosine_fd"          # a module with an @register_objective class

Each registry imports its group's modules the first time it is asked what is registered, after the
built-ins, so every script, the pipeline, the evaluation command and ``make_tables`` see them. An
entry point that cannot be imported is one line naming the plug-in's distribution and module.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from maskalign.errors import ConfigError

TASKS, OBJECTIVES, TEACHERS = "maskalign.tasks", "maskalign.objectives", "maskalign.teachers"
GROUPS = (TASKS, OBJECTIVES, TEACHERS)

_loaded: set[str] = set()


def load_plugins(group: str) -> list[str]:
    """Import every module of entry-point ``group`` once; returns the modules imported this time."""
    if group not in GROUPS:
        raise ValueError(f"unknown plug-in group {group!r}; known: {', '.join(GROUPS)}")
    if group in _loaded:
        return []
    _loaded.add(group)
    done = []
    for ep in entry_points(group=group):
        module = ep.value.split(":", 1)[0]
        try:
            importlib.import_module(module)
        except Exception as e:  # a broken plug-in is named, whatever it raised
            dist = getattr(ep.dist, "name", "?")
            _loaded.discard(group)
            raise ConfigError(f"plug-in {dist}: entry point {ep.name} = {ep.value} of group {group} cannot be "
                              f"imported ({type(e).__name__}: {e})") from None
        done.append(module)
    return done
