"""The suite as one submission: pre-training, then the transfer jobs that consume its encoder.

``python pretrain/submit.py CONFIG --pipeline finetune,linprobe,robustness,coco,ade20k`` submits
the pre-training job and, as SLURM jobs that depend on it (``afterok``), one job per stage:

* ``finetune``, ``linprobe``, ``coco``, ``ade20k`` consume ``OUTPUT/pretrain/<run>/encoder.pth``;
* ``robustness`` consumes the fine-tuned classifier, the checkpoint named in
  ``OUTPUT/finetune/<run>/record.json``, so it depends on ``finetune``.

Each stage job runs ``transfer/<script>.py --ckpt CKPT --local output_dir=OUTPUT name=<run>``
(COCO and ADE20K: ``--output-dir``/``--name``) inside its allocation, so it writes
``OUTPUT/<stage>/<run>/`` (its ``record.json`` when done) and
its SLURM logs land beside it in ``submitit/``. The checkpoint is looked up when the job starts,
not when it is submitted. A stage whose upstream job fails is cancelled by SLURM
(``--kill-on-invalid-dep=yes``). Without SLURM the same stages run here, in order, after the
pre-training; a stage whose upstream failed is skipped. A stage whose script does not exist is
skipped, with a message, together with the stages that depend on it.

``--stage-args STAGE='ARGS'`` passes ``ARGS`` to one stage: launcher flags among them (``--time``,
``--gpus-per-node`` ...) set that stage's SLURM request, the rest go to its script (``--config
NAME``, ``key=value``). A stage of one's own is ``NAME=path/to/script.py`` (run after pre-training)
or ``NAME=path/to/script.py@STAGE`` (consuming the checkpoint in STAGE's record), with the same
command-line contract.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maskalign.config import REPO_ROOT
from maskalign.errors import UserError
from maskalign.launcher import Checkpointable, add_launcher_args, launch, slurm_available
from maskalign.records import RECORD_FILENAME

PRETRAIN = "pretrain"


OVERRIDE_OUTPUT = ("output_dir={root}", "name={run}")


@dataclass(frozen=True)
class Stage:
    """A transfer job: its script, the stage whose checkpoint it consumes, and how to tell it where
    to write (``{root}``: the output root, ``{run}``: the run name, ``{out}``: ``root/stage/run``)."""

    name: str
    script: str  # relative to the repository root, or absolute
    after: str = PRETRAIN
    output_args: tuple[str, ...] = OVERRIDE_OUTPUT

    @property
    def script_path(self) -> Path:
        p = Path(self.script)
        return p if p.is_absolute() else REPO_ROOT / p


STAGES: dict[str, Stage] = {s.name: s for s in (
    Stage("finetune", "transfer/finetune.py"),
    Stage("robustness", "transfer/robustness.py", after="finetune"),
    Stage("linprobe", "transfer/linprobe.py"),
    Stage("coco", "transfer/coco_vitdet.py", output_args=("--output-dir", "{out}", "--name", "{run}")),
    Stage("ade20k", "transfer/ade20k_upernet.py", output_args=("--output-dir", "{root}", "--name", "{run}")),
)}


class PipelineError(UserError):
    """A pipeline that cannot be set up or a stage that failed; one line for the user."""


def parse_stages(text: str) -> list[Stage]:
    """``finetune,robustness,mine=path/to/script.py[@UPSTREAM]`` -> stages, upstream before downstream."""
    stages: list[Stage] = []
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        name, sep, script = item.partition("=")
        name = name.strip()
        if sep:
            if not name.isidentifier() or name in STAGES or name == PRETRAIN:
                raise PipelineError(f"pipeline: custom stage name {name!r} must be a new identifier")
            script, _, after = script.partition("@")
            stage = Stage(name, script.strip(), after.strip() or PRETRAIN)
        elif name in STAGES:
            stage = STAGES[name]
        else:
            raise PipelineError(f"pipeline: unknown stage {name!r}; known: {', '.join(STAGES)} "
                                f"(or NAME=path/to/script.py)")
        if any(s.name == stage.name for s in stages):
            raise PipelineError(f"pipeline: stage {name!r} is listed twice")
        stages.append(stage)
    if not stages:
        raise PipelineError("pipeline: no stage given (e.g. --pipeline finetune,linprobe)")
    names = {s.name for s in stages}
    for s in stages:
        if s.after != PRETRAIN and s.after not in names:
            raise PipelineError(f"pipeline: stage {s.name!r} consumes {s.after!r}'s checkpoint; add {s.after} "
                                f"to --pipeline")
    ordered: list[Stage] = []
    while len(ordered) < len(stages):
        ready = [s for s in stages if s not in ordered and (s.after == PRETRAIN or s.after in {o.name for o in ordered})]
        if not ready:
            raise PipelineError("pipeline: the stages depend on each other in a circle")
        ordered.extend(ready)
    return ordered


def stage_dir(output_root: str | Path, stage: str, run: str) -> Path:
    return Path(output_root) / stage / run


def upstream_checkpoint(stage: Stage, output_root: str | Path, run: str) -> Path:
    """The checkpoint ``stage`` consumes: the pre-training encoder, or the upstream stage's product."""
    if stage.after == PRETRAIN:
        ckpt = stage_dir(output_root, PRETRAIN, run) / "encoder.pth"
        if not ckpt.is_file():
            raise PipelineError(f"pipeline: {stage.name}: the pre-training encoder {ckpt} does not exist "
                                f"(did pretrain/{run} finish?)")
        return ckpt
    record = stage_dir(output_root, stage.after, run) / RECORD_FILENAME
    try:
        ref = (json.loads(record.read_text()).get("checkpoint") or {}).get("path")
    except (OSError, json.JSONDecodeError) as e:
        raise PipelineError(f"pipeline: {stage.name}: cannot read {record} ({e}); did {stage.after}/{run} "
                            f"finish?") from None
    if not ref or not Path(ref).is_file():
        raise PipelineError(f"pipeline: {stage.name}: {record} names no existing checkpoint ({ref!r})")
    return Path(ref)


class StageTask(Checkpointable):
    """One transfer job of a pipeline, run as ``<script> --ckpt CKPT --local output_dir= name=``.

    Picklable and light; the checkpoint is resolved when the job starts. Under SLURM every task
    of the job runs the script with the job's torchrun variables, so a multi-GPU stage is one
    distributed run. Requeueing reruns the script, which resumes from its own checkpoint.
    """

    def __init__(self, stage: Stage, run: str, output_root: str, script_args: list[str]) -> None:
        self.stage, self.run, self.output_root, self.script_args = stage, run, str(output_root), list(script_args)

    @property
    def out_dir(self) -> Path:
        return stage_dir(self.output_root, self.stage.name, self.run)

    def command(self, ckpt: str | Path) -> list[str]:
        where = [a.format(root=self.output_root, run=self.run, out=self.out_dir) for a in self.stage.output_args]
        return [sys.executable, str(self.stage.script_path), "--ckpt", str(ckpt), "--local", *where,
                *self.script_args]

    def describe(self) -> str:
        up = stage_dir(self.output_root, self.stage.after, self.run)
        ckpt = up / "encoder.pth" if self.stage.after == PRETRAIN else f"<checkpoint:{up / RECORD_FILENAME}>"
        return f"[pipeline] {self.stage.name}/{self.run} will run: {shlex.join(self.command(ckpt))}"

    def __call__(self) -> dict[str, Any]:
        ckpt = upstream_checkpoint(self.stage, self.output_root, self.run)
        cmd = self.command(ckpt)
        print(f"[pipeline] {self.stage.name}/{self.run}: {shlex.join(cmd)}", flush=True)
        rc = subprocess.run(cmd, check=False).returncode
        if rc != 0:
            raise PipelineError(f"pipeline: {self.stage.name}/{self.run} failed: {self.stage.script} exited "
                                f"with status {rc}")
        record = self.out_dir / RECORD_FILENAME
        if os.environ.get("RANK", "0") == "0" and not record.is_file():
            raise PipelineError(f"pipeline: {self.stage.name}/{self.run}: {self.stage.script} finished but wrote "
                                f"no {record}")
        return {"stage": self.stage.name, "run": self.run, "record": str(record), "ckpt": str(ckpt)}

    def __repr__(self) -> str:
        return f"StageTask({self.stage.name}/{self.run})"


def parse_stage_args(items: list[str], stages: list[Stage]) -> dict[str, str]:
    """``--stage-args finetune='--config x optim.epochs=1'`` items -> {stage: args}."""
    out: dict[str, str] = {}
    names = {s.name for s in stages}
    for item in items:
        name, sep, rest = item.partition("=")
        if not sep or name not in names:
            raise PipelineError(f"pipeline: --stage-args {item!r}: expected STAGE='ARGS' with STAGE one of "
                                f"{', '.join(sorted(names))}")
        out[name] = (out.get(name, "") + " " + rest).strip()
    return out


def split_stage_args(base: argparse.Namespace, text: str) -> tuple[argparse.Namespace, list[str]]:
    """Launcher flags in ``text`` override ``base`` for this stage; the rest goes to the script.

    The pre-training's job name and dependency are not inherited."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    add_launcher_args(parser)
    ns = copy.copy(base)
    ns.job_name, ns.dependency = None, None
    try:
        ns, rest = parser.parse_known_args(shlex.split(text), namespace=ns)
    except SystemExit:
        raise PipelineError(f"pipeline: cannot parse stage arguments {text!r}") from None
    return ns, rest


@dataclass
class PretrainRun:
    """A pre-training run the pipeline hangs off: its name, output root and, on SLURM, its job id."""

    name: str
    output_root: str
    job_id: str | None = None
    ok: bool = True


@dataclass
class StageOutcome:
    stage: str
    run: str
    status: str  # submitted | done | failed | skipped | planned
    detail: str = ""
    job_id: str | None = None


def run_pipeline(stages: list[Stage], runs: list[PretrainRun], args: argparse.Namespace,
                 stage_args: dict[str, str] | None = None, slurm: bool = False) -> list[StageOutcome]:
    """Submit (``slurm``) or run here, in order, every stage for every pre-training run."""
    stage_args = stage_args or {}
    dry = bool(getattr(args, "dry_run", False))
    outcomes: list[StageOutcome] = []
    for run in runs:
        done: dict[str, StageOutcome] = {}
        for stage in stages:
            up = done.get(stage.after) if stage.after != PRETRAIN else None
            name = f"{stage.name}:{run.name}"
            if not stage.script_path.is_file():
                oc = StageOutcome(stage.name, run.name, "skipped", f"{stage.script} does not exist (yet)")
            elif stage.after == PRETRAIN and not run.ok:
                oc = StageOutcome(stage.name, run.name, "skipped", f"pretrain/{run.name} failed")
            elif up is not None and up.status not in ("submitted", "done", "planned"):
                oc = StageOutcome(stage.name, run.name, "skipped", f"{stage.after}/{run.name} {up.status}")
            else:
                ns, script_args = split_stage_args(args, stage_args.get(stage.name, ""))
                task = StageTask(stage, run.name, run.output_root, script_args)
                upstream_job = run.job_id if stage.after == PRETRAIN else (up.job_id if up else None)
                dependency = f"afterok:{upstream_job}" if slurm and upstream_job else None
                if slurm and dry and dependency is None:
                    dependency = f"afterok:<{stage.after}:{run.name}>"
                oc = _launch_stage(task, ns, name, dependency, slurm, dry)
            if oc.status == "skipped":
                print(f"[pipeline] skipping {stage.name}/{run.name}: {oc.detail}", flush=True)
            done[stage.name] = oc
            outcomes.append(oc)
    return outcomes


def _launch_stage(task: StageTask, ns: argparse.Namespace, name: str, dependency: str | None, slurm: bool,
                  dry: bool) -> StageOutcome:
    if not slurm and slurm_available():
        ns.local = True  # the pre-training ran here (--local): so do its stages
    try:
        result = launch(task, ns, task.out_dir, name, dependency=dependency)
    except Exception as e:  # one failed stage does not stop the others
        if slurm or dry:
            raise
        print(f"[pipeline] {task.stage.name}/{task.run} failed: {e}", file=sys.stderr, flush=True)
        return StageOutcome(task.stage.name, task.run, "failed", str(e))
    if dry:
        return StageOutcome(task.stage.name, task.run, "planned")
    if slurm:
        return StageOutcome(task.stage.name, task.run, "submitted", f"after {dependency}", job_id=result.job_id)
    return StageOutcome(task.stage.name, task.run, "done", result.get("record", ""))


def print_summary(outcomes: list[StageOutcome]) -> None:
    if not outcomes:
        return
    print("[pipeline] stages:")
    for oc in outcomes:
        job = f" job {oc.job_id}" if oc.job_id else ""
        print(f"[pipeline]   {oc.stage}/{oc.run}: {oc.status}{job}{' - ' + oc.detail if oc.detail else ''}")
