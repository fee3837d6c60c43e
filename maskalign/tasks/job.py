"""A registered task's job as the launcher runs it: picklable, requeued, checked for its record.

``TaskJob(spec, module)`` holds a :class:`~maskalign.tasks.spec.JobSpec` and the module that
defines the task, which the job imports again to find the task (a task class from a test file or
a user's package is found the same way as a built-in one; nothing is pickled by value). In a
pipeline the spec has no checkpoint yet: the job looks up its upstream's checkpoint when it
starts, not when it is submitted. Requeueing (``Checkpointable``) reruns the same job, and the
task resumes from the checkpoints in its run folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from maskalign.errors import UserError
from maskalign.launch.runtime import Checkpointable
from maskalign.records import RECORD_FILENAME, RecordError, read_record
from maskalign.tasks.identity import claim, identity_of
from maskalign.tasks.registry import PRETRAIN, get_task
from maskalign.tasks.spec import JobSpec, run_folder

ENCODER_FILE = "encoder.pth"


class UpstreamError(UserError):
    """The checkpoint a job consumes is not there (its upstream did not finish)."""


def upstream_checkpoint(consumes: str, output_root: str | Path, run: str) -> Path:
    """The checkpoint a task consumes: the pre-training's encoder, or what the upstream task's record names."""
    if consumes == PRETRAIN:
        ckpt = run_folder(output_root, PRETRAIN, run) / ENCODER_FILE
        if not ckpt.is_file():
            raise UpstreamError(f"the pre-training encoder {ckpt} does not exist (did pretrain/{run} finish?)")
        return ckpt
    record = run_folder(output_root, consumes, run) / RECORD_FILENAME
    try:
        ref = (read_record(record).checkpoint or {}).get("path")
    except RecordError as e:
        raise UpstreamError(f"cannot read {e}; did {consumes}/{run} finish?") from None
    if not ref or not Path(ref).is_file():
        raise UpstreamError(f"{record} names no existing checkpoint ({ref!r})")
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
        ckpt = spec.ckpt
        if ckpt is None:
            ckpt = upstream_description(get_task(spec.task, self.module).consumes, spec.output_root, spec.run)
        lines = [f"task: {spec.task}", f"ckpt: {ckpt}", f"run folder: {spec.folder}",
                 f"config: {spec.config_path or spec.config or '(default)'}"]
        if spec.overrides:
            lines.append(f"overrides: {' '.join(spec.overrides)}")
        lines += [f"{k}: {v}" for k, v in spec.options.items()]
        if spec.resolved is not None:
            from omegaconf import OmegaConf

            lines.append(OmegaConf.to_yaml(OmegaConf.create(spec.resolved)).rstrip())
        return "\n".join(lines)

    def __call__(self) -> dict[str, Any]:
        task = get_task(self.spec.task, self.module)
        spec = self.spec
        if spec.ckpt is None:
            spec = spec.with_(ckpt=str(upstream_checkpoint(task.consumes, spec.output_root, spec.run)))
            print(f"[task] {spec.task}/{spec.run}: checkpoint {spec.ckpt}", flush=True)
        claim(spec.folder, identity_of(spec))  # this folder is this source's and config's, or refused
        result = dict(task.run(spec) or {})
        record = spec.folder / RECORD_FILENAME
        if os.environ.get("RANK", "0") == "0" and not record.is_file():
            raise UpstreamError(f"{spec.task}/{spec.run} finished but wrote no {record}")
        result.setdefault("record", str(record))
        result.setdefault("out_dir", str(spec.folder))
        result.setdefault("ckpt", spec.ckpt)
        return result

    def __repr__(self) -> str:
        return f"TaskJob({self.spec.task}/{self.spec.run})"
