"""The one job spec every transfer task takes, and the one rule for where a run writes.

A run of task ``T`` named ``R`` under the output root ``O`` writes ``O/T/R/`` (``record.json``
when done), whatever the task. Unless named, a run is ``<source>-<config>``: the run the
encoder came from (its checkpoint's ``run``), else the file's stem or the hub name, and the stem
of the config applied to it (the task's default config when none is given): the naming rules and
what makes a name unique per source are :mod:`maskalign.tasks.identity`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any


def run_folder(output_root: str | Path, task: str, run: str) -> Path:
    """``<output_root>/<task>/<run>/``: the folder of one run of one task."""
    return Path(output_root) / task / run


def pull_run_overrides(overrides: list[str] | tuple[str, ...]) -> tuple[str | None, str | None, list[str]]:
    """``output_dir=`` and ``name=`` among ``key=value`` overrides (the last of each wins): the same two
    settings as ``--output-dir`` and ``--name``. Returns (output root, run name, the other overrides)."""
    root = name = None
    rest = []
    for o in overrides:
        key, _, value = o.partition("=")
        if key == "output_dir":
            root = value or None
        elif key == "name":
            name = value or None
        else:
            rest.append(o)
    return root, name, rest


@dataclass(frozen=True)
class JobSpec:
    """Everything one transfer job needs; plain values, so the task pickles in a few kilobytes.

    Args:
        task: the registered task's name (``finetune``, ``coco`` ...).
        ckpt: the encoder it starts from (a checkpoint path); ``None`` in a pipeline until the job
            starts and finds its upstream's checkpoint.
        output_root: the output root; the run writes ``<output_root>/<task>/<run>/``.
        run: the run's name.
        config: the config as given (a name in the task's config folder, or a path); ``None`` for
            the task's default.
        overrides: ``key=value`` strings applied to the config.
        options: the task's own command-line options (``data``, ``eval_only``, ``weights`` ...).
        resolved: the resolved config when the task resolves it before launching (what a dry run
            prints); tasks whose configs need their engine to load fill only ``config_path``.
        config_path: the config file found for ``config``.
    """

    task: str
    ckpt: str | None
    output_root: str
    run: str
    config: str | None = None
    overrides: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)
    resolved: dict[str, Any] | None = None
    config_path: str | None = None

    @property
    def folder(self) -> Path:
        return run_folder(self.output_root, self.task, self.run)

    def with_(self, **changes: Any) -> JobSpec:
        """A copy with ``changes`` (a frozen spec is never edited in place)."""
        return replace(self, **changes)
