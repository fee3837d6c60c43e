"""The registry of transfer tasks: each task registers itself where it is defined.

A task is a subclass of :class:`Task` decorated with :func:`register_task`; the one instance is
what the entry scripts (``transfer/*.py`` = ``cli.main(NAME)``), the pipeline and the launcher
use. A task declares its name, the stage whose checkpoint it consumes, its config folder and
default config, its extra command-line flags, its cheap checks before anything is launched, its
run function, its metrics and (optionally) its tables::

    @register_task
    class MyTask(Task):
        name = "mytask"
        description = "what it measures"
        metrics = ("score",)

        def run(self, spec: JobSpec) -> dict: ...  # writes spec.folder/record.json

The built-in tasks live in :data:`BUILTIN_MODULES`, imported on first lookup, then the modules an
installed plug-in names under the entry-point group ``maskalign.tasks`` (:mod:`maskalign.plugins`);
any other module registers its tasks by being imported (a test file, ``--pipeline NAME=package.module``).
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from maskalign.errors import UserError
from maskalign.plugins import TASKS, load_plugins
from maskalign.tasks.spec import JobSpec, source_run_of

#: The stage every transfer task consumes unless it says otherwise: the pre-trained encoder.
PRETRAIN = "pretrain"
#: Modules that define the built-in tasks; imported when a task is first looked up.
BUILTIN_MODULES = ("maskalign.transfer.tasks", "maskalign.detection.task", "maskalign.segmentation.task")
#: Record tasks that are not transfer tasks (pre-training, the speed benchmark).
OTHER_RECORD_TASKS = (PRETRAIN, "speed")

_REGISTRY: dict[str, Task] = {}
_builtins_loaded = False


class TaskError(UserError):
    """An unknown task, or a task that cannot be registered."""


class Task:
    """A kind of transfer job. Subclass, set the class attributes, implement :meth:`run`."""

    #: The task's name: its output folder ``<root>/<name>/``, its record's ``task``, its pipeline stage.
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: The stage whose checkpoint it consumes: ``pretrain`` (the encoder) or another task's name.
    consumes: ClassVar[str] = PRETRAIN
    #: The folder ``--config NAME`` is looked up in (``None``: the task takes no config).
    config_dir: ClassVar[Path | None] = None
    #: The config used when none is given (its stem is part of the default run name).
    default_config: ClassVar[str] = "default"
    #: The record metrics it writes (see :mod:`maskalign.metric_names`).
    metrics: ClassVar[tuple[str, ...]] = ()
    ckpt_help: ClassVar[str] = ("pre-trained encoder: this project's encoder.pth/checkpoint.pth, a published file (MAE,"
                                " CrossMAE, LUT, MaskAlign, DINO, DINOv2, DeiT III, BEiT, OpenAI/open_clip CLIP, any "
                                "timm ViT; options after '#': act=, num_heads=, mean=, std=), timm:<name>[.tag] or "
                                "open_clip:<model>/<tag>")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """The task's own flags (beyond ``--ckpt``, ``--config``, ``--output-dir``, ``--name``)."""

    def options(self, args: argparse.Namespace) -> dict[str, Any]:
        """The values of :meth:`add_arguments`' flags, as :attr:`JobSpec.options`."""
        return {}

    def check_source(self, ckpt: str) -> str:
        """Read the checkpoint now (a bad file fails here, in one line); return the run it came from."""
        from maskalign.transfer.source import load_pretrained

        src = load_pretrained(ckpt)
        return source_run_of(ckpt, src.meta)

    def prepare(self, spec: JobSpec) -> JobSpec:
        """Cheap checks of config and data before anything is launched (no checkpoint needed: in a
        pipeline it does not exist yet); returns the spec with ``config_path``/``resolved`` filled."""
        return spec

    def run(self, spec: JobSpec) -> dict[str, Any]:
        """Run the job (in the job's process); write ``spec.folder/record.json``; return a summary
        with ``metrics`` and ``record``."""
        raise NotImplementedError(f"task {self.name!r} has no run()")

    def summary(self, result: dict[str, Any]) -> str:
        """What the entry script prints when the job ran here."""
        metrics = result.get("metrics") or {}
        shown = ", ".join(f"{k} {v:.2f}" for k, v in metrics.items() if isinstance(v, float) and "/" not in k)
        return f"Done: {shown}\nRecord: {result.get('record')}"

    def tables(self) -> Sequence[Any]:
        """Extra table specs (:class:`maskalign.results.tables.Spec`) built from this task's records."""
        return ()

    @property
    def module(self) -> str:
        """The module that defines (and so registers) the task; imported again inside a job."""
        return type(self).__module__

    def __repr__(self) -> str:
        return f"<task {self.name}>"


T = TypeVar("T", bound=type[Task])


def register_task(cls: T) -> T:
    """Class decorator: register one instance of ``cls`` under ``cls.name``."""
    name = cls.name
    if not name or not name.isidentifier():
        raise TaskError(f"task class {cls.__qualname__}: name {name!r} must be an identifier")
    if name in OTHER_RECORD_TASKS:
        raise TaskError(f"task name {name!r} is reserved")
    old = _REGISTRY.get(name)
    if old is not None and type(old).__qualname__ != cls.__qualname__:
        raise TaskError(f"task {name!r} is registered twice ({type(old).__module__} and {cls.__module__})")
    _REGISTRY[name] = cls()
    return cls


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        for mod in BUILTIN_MODULES:
            importlib.import_module(mod)
    load_plugins(TASKS)  # installed plug-ins (entry points), after the built-ins


def registered_tasks() -> dict[str, Task]:
    """Every registered task by name, the built-in ones first."""
    _load_builtins()
    return dict(_REGISTRY)


def get_task(name: str, module: str | None = None) -> Task:
    """The task registered as ``name`` (importing ``module`` first, where it is defined)."""
    if module is not None and name not in _REGISTRY:
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise TaskError(f"task {name!r}: cannot import {module} ({e})") from None
    tasks = registered_tasks()
    if name not in tasks:
        raise TaskError(f"unknown task {name!r}; known: {', '.join(tasks)}")
    return tasks[name]


def record_tasks() -> tuple[str, ...]:
    """Every ``task`` a record may name: pre-training, the speed benchmark and the registered tasks."""
    return (*OTHER_RECORD_TASKS, *registered_tasks())
