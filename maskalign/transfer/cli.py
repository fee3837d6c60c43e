"""The one command line of every task: ``transfer/<script>.py`` and ``pretrain/submit.py`` are ``cli.run(TASK)``.

``[--ckpt CKPT] [--config NAME|FILE] [--output-dir ROOT] [--name RUN] [--data DIR] [task flags]
[key=value ...] [launcher flags]``, flags and overrides in any order (``--ckpt`` for every task
that consumes an encoder, that is every task but pre-training). The run writes ``ROOT/<task>/RUN/``
(``ROOT``: ``--output-dir``, else ``$MASKALIGN_OUTPUT``, else ``output``; ``RUN``: ``--name``,
else ``<source>-<config>``, unique per source: :mod:`maskalign.tasks.identity`). A run folder
belongs to one source and config; another is refused before launch. ``output_dir=`` and ``name=``
overrides are accepted as the same two settings. The checkpoint, the config and the data are checked before anything is
launched, so a wrong input fails here, in one line, not in a queued job. Errors meant for the
user (``UserError``) are printed as one line on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from maskalign.config import default_output_root
from maskalign.errors import UserError
from maskalign.launch import get_args_parser as launcher_parser
from maskalign.launch import launch
from maskalign.tasks import JobSpec, Task, TaskJob, default_run_name, get_task
from maskalign.tasks.identity import check_identity, identity_of, source_identity, unique_run_name
from maskalign.tasks.spec import pull_run_overrides


def add_task_args(p: argparse.ArgumentParser, task: Task, ckpt_required: bool = True) -> None:
    """The arguments every task takes, then the task's own flags, then the overrides (``ckpt_required=False``:
    a pipeline stage, whose checkpoint is its upstream's)."""
    g = p.add_argument_group(f"{task.name} job")
    if task.consumes is not None and ckpt_required:
        g.add_argument("--ckpt", required=True, help=task.ckpt_help)
    where = f"a name in {task.config_dir}" if task.config_dir else "a name"
    g.add_argument("--config", "--config-file", dest="config", default=None,
                   help=f"recipe: a path or {where} (default: {task.default_config})")
    g.add_argument("--output-dir", dest="output_dir", default=None,
                   help=f"output root: the run writes <output-dir>/{task.name}/<name>/ "
                        "(default: $MASKALIGN_OUTPUT, else output)")
    g.add_argument("--name", default=None, help="run name (default: <source>-<config>, the source being the "
                   "file's stem, the hub name or this project's run)" if task.consumes
                   else "run name (default: the config's name, else its file's stem)")
    task.add_arguments(p)
    p.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. optim.epochs=5")


def get_args_parser(task: str, description: str | None = None,
                    parents: list[argparse.ArgumentParser] | None = None,
                    add_help: bool = True) -> argparse.ArgumentParser:
    """The parser of ``transfer/<script>.py`` for ``task``: launcher flags, the common ones, the task's own."""
    t = get_task(task)
    p = launcher_parser(description or t.description, parents=parents, add_help=add_help)
    add_task_args(p, t)
    return p


def parse_args(task: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Flags and overrides in any order (``parse_intermixed_args``)."""
    return get_args_parser(task).parse_intermixed_args(argv)


def build_spec(task: Task, args: argparse.Namespace, ckpt: str | None, *, source_run: str | None = None,
               run: str | None = None, output_root: str | None = None,
               source: dict[str, str] | None = None) -> JobSpec:
    """The checked job spec of ``args``: ``run``/``output_root`` win (the pipeline's), then the flags,
    then ``name=``/``output_dir=`` overrides, then the defaults. With the ``source``'s identity the
    default name is unique to it (:func:`maskalign.tasks.identity.unique_run_name`)."""
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        raise UserError(f"command line: unexpected argument {bad[0]!r} (overrides are key=value)")
    root_alias, name_alias, overrides = pull_run_overrides(args.overrides)
    root = output_root or args.output_dir or root_alias or default_output_root()
    name = run or args.name or name_alias
    if name is None and source is not None:
        name = unique_run_name(Path(root).resolve(), task.name, source_run or "run", args.config,
                               task.default_config, source)
    if name is None and task.consumes is not None:  # a task that makes its own encoder names itself in prepare
        name = default_run_name(source_run or "run", args.config, task.default_config)
    spec = JobSpec(task=task.name, ckpt=ckpt, output_root=str(Path(root).resolve()), run=name or "",
                   config=args.config, overrides=tuple(overrides), options=task.options(args))
    return task.prepare(spec)


def on_demo_data(spec: JobSpec) -> bool:
    """A run on the demo world (no real data given), which may run here when SLURM does not answer."""
    data = (spec.resolved or {}).get("data") or {}
    return not data.get("root") and not spec.options.get("data")


def main(task_name: str, args: argparse.Namespace) -> int:
    """Check, then launch (SLURM, here, or a dry run) one job of ``task_name``."""
    from maskalign.encoders.source_spec import absolute_spec

    try:
        task = get_task(task_name)
        ckpt = source_run = None
        if task.consumes is not None:
            ckpt = absolute_spec(args.ckpt)  # a file made absolute for jobs run elsewhere; hub names kept
            source_run = task.check_source(args.ckpt)
        spec = build_spec(task, args, ckpt, source_run=source_run,
                          source=source_identity(ckpt) if ckpt is not None else None)
        if ckpt is not None:
            # a folder of another encoder or config: refused now
            check_identity(spec.folder, identity_of(spec, task.rerun_keys))
        args.local_fallback = on_demo_data(spec)  # as pre-training: here when SLURM's controller is silent
        result = launch(TaskJob(spec, task.module), args, spec.folder, f"{task.name}:{spec.run}")
    except (UserError, FloatingPointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if result.ran_here and isinstance(result.result, dict):
        print("\n" + task.summary(result.result))
    return 0


def run(task_name: str, argv: Sequence[str] | None = None) -> int:
    """``python transfer/<script>.py ...`` in one call: parse ``argv`` (flags anywhere) and run ``main``."""
    return main(task_name, parse_args(task_name, argv))
