"""The registry of tasks: each task registers itself where it is defined.

A task is a subclass of :class:`Task` decorated with :func:`register_task`; the one instance is
what the entry scripts (``transfer/*.py`` and ``pretrain/submit.py``, each ``cli.run(NAME)``), the
pipeline, the evaluation command and the launcher use. A task declares its name, the stage whose
checkpoint it consumes, its config folder and default config, its extra command-line flags, its
cheap checks before anything is launched, and its science::

    @register_task
    class MyTask(Task):
        name = "mytask"
        description = "what it measures"
        metrics = ("score",)

        def run(self, ctx: RunContext) -> dict:
            return {"metrics": {"score": ...}}   # the job writes record.json from these

The built-in tasks live in ``maskalign/<area>/*task.py`` (or ``*tasks.py``) modules, found and
imported on first lookup (:func:`builtin_modules`), then the modules that installed plug-ins name
under the entry-point group ``maskalign.tasks`` (:mod:`maskalign.plugins`); any other module
registers its tasks by being imported (a test file, ``--pipeline NAME=package.module``).
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from maskalign.errors import ConfigError
from maskalign.plugins import TASKS, load_plugins
from maskalign.tasks.identity import source_name
from maskalign.tasks.spec import JobSpec

if TYPE_CHECKING:
    from maskalign.tasks.context import RunContext

#: The stage every transfer task consumes unless it says otherwise: the pre-trained encoder.
PRETRAIN = "pretrain"
#: The file names that hold an area's tasks: every ``maskalign/<area>/*task.py`` and ``*tasks.py``
#: (``task.py``, ``frozen_tasks.py`` ...) is imported when a task is first looked up, so a new
#: in-tree task needs no edit of this file.
TASK_MODULE_PATTERNS = ("*task.py", "*tasks.py")
#: The order tables and listings show the built-in tasks in (others follow, by module name).
BUILTIN_ORDER = ("maskalign.engine.task", "maskalign.transfer.tasks", "maskalign.detection.task",
                 "maskalign.segmentation.task", "maskalign.transfer.frozen_tasks")
#: Record tasks that are not registered tasks (the speed benchmark).
OTHER_RECORD_TASKS = ("speed",)

_REGISTRY: dict[str, Task] = {}
_builtins_loaded = False


class Task:
    """A kind of job (pre-training, a transfer protocol). Subclass, set the class attributes, implement :meth:`run`."""

    #: The task's name: its output folder ``<root>/<name>/``, its record's ``task``, its pipeline stage.
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: The stage whose checkpoint it consumes: ``pretrain`` (the encoder), another task's name, or
    #: ``None`` (pre-training itself: no ``--ckpt``).
    consumes: ClassVar[str | None] = PRETRAIN
    #: The folder ``--config NAME`` is looked up in (``None``: the task takes no config).
    config_dir: ClassVar[Path | None] = None
    #: The config used when none is given (its stem is part of the default run name).
    default_config: ClassVar[str] = "default"
    #: The record metrics it writes (see :mod:`maskalign.metric_names`).
    metrics: ClassVar[tuple[str, ...]] = ()
    #: Config sections a run may be started again with other values of, in the same folder: they
    #: change only the last, cheap step (k-NN's k's and temperature over cached features).
    rerun_keys: ClassVar[tuple[str, ...]] = ()
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
        return source_name(ckpt, src.meta)

    def prepare(self, spec: JobSpec) -> JobSpec:
        """Cheap checks of config and data before anything is launched (no checkpoint needed: in a
        pipeline it does not exist yet); returns the spec with ``config_path``/``resolved`` filled."""
        return spec

    def validate(self, spec: JobSpec) -> None:
        """Checks the submitting process runs before ``sbatch`` (files that may change meanwhile are
        checked again when the job starts)."""

    def open_folder(self, ctx: RunContext) -> None:
        """Take the run folder before :meth:`run` (one writer, ``config.yaml``): see :meth:`RunContext.open`."""
        ctx.open()

    def run(self, ctx: RunContext) -> dict[str, Any]:
        """The task's science, in the job's process: return ``{"metrics": {...}}`` (plus, optionally,
        ``checkpoint``: the model the run made, which a downstream stage consumes, and anything the
        summary prints). The job writes ``record.json`` from them (:meth:`RunContext.write_record`)."""
        raise NotImplementedError(f"task {self.name!r} has no run()")

    def source_record(self, ctx: RunContext) -> tuple[dict[str, Any], dict[str, str], dict[str, Any]]:
        """What the record says of the source: its metadata (method, backbone, supervision, ratios,
        epochs), how it points at it (path + sha256, or hub name), and how it was loaded. A task whose
        source is no encoder (a test's stand-in) says so here."""
        from maskalign.transfer.source import encoder_record

        src = ctx.source
        return src.meta, src.ref, encoder_record(src)

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
        raise ConfigError(f"task class {cls.__qualname__}: name {name!r} must be an identifier")
    if name in OTHER_RECORD_TASKS:
        raise ConfigError(f"task name {name!r} is reserved")
    old = _REGISTRY.get(name)
    if old is not None and type(old).__qualname__ != cls.__qualname__:
        raise ConfigError(f"task {name!r} is registered twice ({type(old).__module__} and {cls.__module__})")
    _REGISTRY[name] = cls()
    return cls


def builtin_modules() -> list[str]:
    """The in-tree task modules (:data:`TASK_MODULE_PATTERNS`), those of :data:`BUILTIN_ORDER` first."""
    root = Path(__file__).resolve().parents[1]
    found = {f"maskalign.{p.parent.name}.{p.stem}"
             for pattern in TASK_MODULE_PATTERNS for p in root.glob(f"*/{pattern}")}
    found.discard("maskalign.tasks.tasks")
    return [m for m in BUILTIN_ORDER if m in found] + sorted(found - set(BUILTIN_ORDER))


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        for mod in builtin_modules():
            importlib.import_module(mod)
    load_plugins(TASKS)  # installed plug-ins (entry points), after the built-ins


def registered_tasks() -> dict[str, Task]:
    """Every registered task by name: the built-in ones first (in :data:`BUILTIN_ORDER`, whatever was
    imported first), then plug-ins' and others' in registration order."""
    _load_builtins()
    order = {m: i for i, m in enumerate(builtin_modules())}
    return dict(sorted(_REGISTRY.items(), key=lambda item: order.get(item[1].module, len(order))))


def get_task(name: str, module: str | None = None) -> Task:
    """The task registered as ``name`` (importing ``module`` first, where it is defined)."""
    if module is not None and name not in _REGISTRY:
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ConfigError(f"task {name!r}: cannot import {module} ({e})") from None
    tasks = registered_tasks()
    if name not in tasks:
        raise ConfigError(f"unknown task {name!r}; known: {', '.join(tasks)}")
    return tasks[name]
