"""Where a task runs: printed only (``--dry-run``), here (no SLURM, or ``--local``), or on SLURM.

``launch(task, args, folder, name)`` submits one picklable task (an object with ``__call__`` and
``checkpoint``, see :mod:`maskalign.launch.runtime`) as one SLURM task per GPU (one per node
without GPUs), or calls it in this process; ``launch_array`` submits several tasks as one SLURM
job array, or runs them here one after another. Both return one :class:`LaunchResult`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from maskalign.launch.flags import ClusterSpec, opt
from maskalign.launch.runtime import JobTask
from maskalign.launch.slurm import (
    check_cluster,
    executor,
    launched_by_torchrun,
    print_config,
    sbatch_script,
    submit,
    use_slurm,
    write_job_info,
)

LOCAL, SLURM, DRY_RUN = "local", "slurm", "dry_run"


@dataclass
class LaunchResult:
    """What a launch did, the same shape whatever the mode.

    Args:
        mode: ``local`` (ran here), ``slurm`` (submitted) or ``dry_run`` (printed only).
        name: the launch's name (the SLURM job name).
        folders: each run's folder, in task order.
        job_ids: on SLURM, each run's job id (``123`` or ``123_4`` in an array); else ``None``s.
        results: here, what each run returned (``None`` for a run that failed); else ``None``s.
        errors: here, the exception of each failed run of an array (``None`` for the others).
        jobs: on SLURM, submitit's job objects.
    """

    mode: str
    name: str
    folders: list[Path]
    job_ids: list[str | None] = field(default_factory=list)
    results: list[Any] = field(default_factory=list)
    errors: list[BaseException | None] = field(default_factory=list)
    jobs: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.folders)
        self.job_ids = self.job_ids or [None] * n
        self.results = self.results or [None] * n
        self.errors = self.errors or [None] * n

    @property
    def job_id(self) -> str | None:
        """The first run's job id (the job itself for a single launch)."""
        return self.job_ids[0] if self.job_ids else None

    @property
    def result(self) -> Any:
        """The first run's return value (the run itself for a single local launch)."""
        return self.results[0] if self.results else None

    @property
    def failed(self) -> bool:
        """Whether a run that ran here failed (arrays only: a single run raises instead)."""
        return any(e is not None for e in self.errors)

    @property
    def ran_here(self) -> bool:
        """Whether the task(s) ran in this process, so ``results`` hold their return values."""
        return self.mode == LOCAL


def launch(task: Any, args: argparse.Namespace, folder: str | os.PathLike, name: str, *,
           dependency: str | None = None) -> LaunchResult:
    """Submit ``task`` to SLURM, or run it here (where its exception propagates), or print it.

    ``dependency`` (e.g. ``afterok:1234``) is added to ``--dependency``. Raises ``ConfigError`` (a
    ``UserError``) before anything is submitted when the request is wrong.
    """
    folder = Path(folder)
    return _launch([task], args, [folder], name, folder / "submitit" / "%j", dependency, array=False)


def launch_array(tasks: Sequence[Any], args: argparse.Namespace, folders: Sequence[str | os.PathLike],
                 name: str, array_folder: str | os.PathLike, *, dependency: str | None = None) -> LaunchResult:
    """Submit ``tasks`` as one SLURM job array (``folders[i]`` is task i's run folder), or run them here
    one after another; a run that fails here is reported and recorded in ``errors``, not raised."""
    if len(tasks) != len(folders) or not tasks:
        raise ValueError("launch_array: one folder per task, and at least one task")
    return _launch(list(tasks), args, [Path(f) for f in folders], name, Path(array_folder) / "%j", dependency,
                   array=True)


def _launch(tasks: list[Any], args: argparse.Namespace, folders: list[Path], name: str, logs: Path,
            dependency: str | None, array: bool) -> LaunchResult:
    spec = ClusterSpec.from_args(args)
    slurm = use_slurm(args)
    what = f"{name} ({len(tasks)} runs)" if array else name
    here = "on this machine, one after another" if array else "on this machine"
    if opt(args, "dry_run", False):
        print(f"[launcher] dry run of {what}: nothing is submitted or run")
        for i, (task, folder) in enumerate(zip(tasks, folders)):
            print(f"[launcher] {f'run {i}: ' if array else ''}{folder}")
            print_config(task)
        if not slurm:
            print(f"[launcher] would run {what} {here} ({_local_reason(args)})")
        else:
            check_cluster(spec)
            print(f"[launcher] would submit {what} to SLURM: {spec.describe()}\n"
                  f"{sbatch_script(spec.sbatch_params(name, dependency), logs, len(tasks) if array else None)}")
        return LaunchResult(DRY_RUN, name, folders)
    if not slurm:
        print(f"[launcher] {_local_reason(args)}: running {what} {here}", flush=True)
        if not array:
            return LaunchResult(LOCAL, name, folders, results=[tasks[0]()])
        results: list[Any] = []
        errors: list[BaseException | None] = []
        for i, (task, folder) in enumerate(zip(tasks, folders)):
            print(f"[launcher] run {i + 1}/{len(tasks)}: {folder}", flush=True)
            try:
                results.append(task())
                errors.append(None)
            except Exception as e:  # noqa: BLE001 - one failed run does not stop the sweep, as in an array
                print(f"[launcher] run {folder.name} failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
                results.append(None)
                errors.append(e)
        return LaunchResult(LOCAL, name, folders, results=results, errors=errors)
    for task in tasks:  # the job's own checks, before anything is queued
        if callable(getattr(task, "validate", None)):
            task.validate()
    check_cluster(spec)
    params = spec.sbatch_params(name, dependency)
    ex = executor(logs, params, spec.max_requeues)
    names = [f"{name}[{f.name}]" for f in folders] if array else [name]

    def submit_all() -> list[Any]:
        if not array:
            return [ex.submit(JobTask(tasks[0], name))]
        with ex.batch():
            pending = [ex.submit(JobTask(t, n)) for t, n in zip(tasks, names)]
        return pending

    jobs = submit(submit_all, name)
    for job, folder, job_name in zip(jobs, folders, names):
        if array:  # the array's files live in one folder; each run folder links to its own
            link = folder / "submitit" / str(job.job_id)
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.is_symlink():
                link.symlink_to(job.paths.folder.resolve(), target_is_directory=True)
        write_job_info(folder, job.job_id, job_name, params, job.paths.folder)
    if array:
        print(f"[launcher] submitted {name} as SLURM job array {jobs[0].job_id.split('_')[0]} of {len(jobs)} "
              f"({spec.describe()}):", flush=True)
        for job, folder in zip(jobs, folders):
            print(f"[launcher]   {job.job_id}: {folder}", flush=True)
    else:
        print(f"[launcher] submitted {name} as SLURM job {jobs[0].job_id} ({spec.describe()}); "
              f"outputs in {folders[0]}, logs in {jobs[0].paths.folder}", flush=True)
    return LaunchResult(SLURM, name, folders, job_ids=[str(j.job_id) for j in jobs], jobs=jobs)


def _local_reason(args: argparse.Namespace) -> str:
    if opt(args, "local", False):
        return "--local given"
    if launched_by_torchrun():
        return "one rank of a torchrun world"
    if opt(args, "slurm_silence", None):
        return f"SLURM's tools are on PATH but no controller answers ({args.slurm_silence}); this demo runs here"
    return "no SLURM here (no sbatch on PATH)"
