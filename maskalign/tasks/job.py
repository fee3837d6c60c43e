"""A registered task's job as the launcher runs it: picklable, requeued, checked for its record.

``TaskJob(spec, module)`` holds a :class:`~maskalign.tasks.spec.JobSpec` and the module that
defines the task, which the job imports again to find the task (a task class from a test file or
a user's package is found the same way as a built-in one; nothing is pickled by value). In a
pipeline the spec has no checkpoint yet: the job looks up its upstream's checkpoint when it
starts, not when it is submitted. Requeueing (``Checkpointable``) reruns the same job, and the
task resumes from the checkpoints in its run folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from maskalign.errors import CheckpointError
from maskalign.launch.runtime import Checkpointable
from maskalign.records import RECORD_FILENAME, DataError, read_record
from maskalign.tasks.identity import claim, identity_of
from maskalign.tasks.registry import PRETRAIN, get_task
from maskalign.tasks.spec import JobSpec, run_folder

ENCODER_FILE = "encoder.pth"


def upstream_checkpoint(consumes: str, output_root: str | Path, run: str) -> Path:
    """The checkpoint a task consumes: the pre-training's encoder, or what the upstream task's record names."""
    if consumes == PRETRAIN:
        ckpt = run_folder(output_root, PRETRAIN, run) / ENCODER_FILE
        if not ckpt.is_file():
            raise CheckpointError(f"the pre-training encoder {ckpt} does not exist (did pretrain/{run} finish?)")
        return ckpt
    record = run_folder(output_root, consumes, run) / RECORD_FILENAME
    try:
        ref = (read_record(record).checkpoint or {}).get("path")
    except DataError as e:
        raise CheckpointError(f"cannot read {e}; did {consumes}/{run} finish?") from None
    if not ref or not Path(ref).is_file():
        raise CheckpointError(f"{record} names no existing checkpoint ({ref!r})")
    return Path(ref)


def upstream_description(consumes: str, output_root: str | Path, run: str) -> str:
    """What a dry run shows for a checkpoint that is looked up when the job starts."""
    if consumes == PRETRAIN:
        return str(run_folder(output_root, PRETRAIN, run) / ENCODER_FILE)
    return f"<checkpoint named in {run_folder(output_root, consumes, run) / RECORD_FILENAME}>"


class TaskJob(Checkpointable):
    """Runs ``get_task(spec.task).run(spec)``; the run must leave ``record.json`` in its folder."""

    def __init__(self, spec: JobSpec, module: str) -> None:
        self.spec, self.module = spec, module

    @property
    def folder(self) -> Path:
        return self.spec.folder

    def describe(self) -> str:
        """What ``--dry-run`` prints: the job spec and, when resolved already, the config."""
        spec = self.spec
        consumes = get_task(spec.task, self.module).consumes
        lines = [f"task: {spec.task}"]
        if consumes is not None:
            lines.append(f"ckpt: {spec.ckpt or upstream_description(consumes, spec.output_root, spec.run)}")
        lines += [f"run folder: {spec.folder}", f"config: {spec.config_path or spec.config or '(default)'}"]
        if spec.overrides:
            lines.append(f"overrides: {' '.join(spec.overrides)}")
        lines += [f"{k}: {v}" for k, v in spec.options.items()]
        if spec.resolved is not None:
            from omegaconf import OmegaConf

            lines.append(OmegaConf.to_yaml(OmegaConf.create(spec.resolved)).rstrip())
        return "\n".join(lines)

    def validate(self) -> None:
        """What the launcher runs before submitting: the task's own checks."""
        get_task(self.spec.task, self.module).validate(self.spec)

    def __call__(self) -> dict[str, Any]:
        from maskalign.tasks.context import RunContext

        task = get_task(self.spec.task, self.module)
        spec = self.spec
        if spec.ckpt is None and task.consumes is not None:
            spec = spec.with_(ckpt=str(upstream_checkpoint(task.consumes, spec.output_root, spec.run)))
            print(f"[task] {spec.task}/{spec.run}: checkpoint {spec.ckpt}", flush=True)
        ctx = RunContext(task, spec)
        try:
            task.open_folder(ctx)
            if task.consumes is not None:
                # this folder is this source's and config's, or refused
                claim(spec.folder, identity_of(spec, task.rerun_keys))
                ctx.check_record()
            result = dict(task.run(ctx) or {})
            record = spec.folder / RECORD_FILENAME
            if ctx.is_main and "metrics" in result and "record" not in result:
                record = ctx.write_record(result["metrics"], result.get("checkpoint"))
            if ctx.is_main and not record.is_file():
                raise CheckpointError(f"{spec.task}/{spec.run} finished but wrote no {record}")
        finally:
            ctx.close()
        result.setdefault("record", str(record))
        result.setdefault("out_dir", str(spec.folder))
        result.setdefault("ckpt", spec.ckpt)
        return result

    def __repr__(self) -> str:
        return f"TaskJob({self.spec.task}/{self.spec.run})"


def job_for(task: str, *, ckpt: str | Path | None = None, overrides: tuple[str, ...] | list[str] = (),
            output_root: str | Path | None = None, run: str = "", config: str | None = None,
            **options: Any) -> TaskJob:
    """The job of one run of ``task``, checked and resolved as its entry script would make it, for
    code that runs jobs without a command line (tests, benchmarks, notebooks): ``job_for(...)()``.
    ``output_dir=``/``name=`` among the overrides are ``output_root``/``run``, as on the command line."""
    from maskalign.config import default_output_root
    from maskalign.tasks.identity import default_run_name
    from maskalign.tasks.spec import pull_run_overrides

    t = get_task(task)
    root_alias, name_alias, rest = pull_run_overrides(overrides)
    run = run or name_alias or ""
    if not run and t.consumes is not None:
        run = default_run_name(t.check_source(str(ckpt)), config, t.default_config)
    spec = JobSpec(task=task, ckpt=str(ckpt) if ckpt is not None else None,
                   output_root=str(Path(output_root or root_alias or default_output_root()).resolve()), run=run,
                   config=config, overrides=tuple(rest), options=options)
    return TaskJob(t.prepare(spec), t.module)
