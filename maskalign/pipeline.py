"""The suite as one submission: pre-training, then the registered tasks that consume its encoder.

``python pretrain/submit.py CONFIG --pipeline finetune,linprobe,robustness,coco,ade20k`` submits
the pre-training job and, as SLURM jobs that depend on it (``afterok``), one job per stage. A
stage is a registered task (:mod:`maskalign.tasks`), submitted as the same
:class:`~maskalign.tasks.job.TaskJob` its entry script submits, so requeueing, ``--local`` and
dry runs work the same way:

* ``finetune``, ``linprobe``, ``coco``, ``ade20k`` consume ``OUTPUT/pretrain/<run>/encoder.pth``;
* ``robustness`` consumes the fine-tuned classifier named in ``OUTPUT/finetune/<run>/record.json``,
  so it depends on ``finetune`` (a task declares what it consumes: ``Task.consumes``).

Each stage writes ``OUTPUT/<stage>/<run>/`` (its ``record.json`` when done; SLURM logs in
``submitit/``), ``<run>`` being the pre-training's run name. The checkpoint is looked up when the
job starts, not when it is submitted; its config and data are checked before submission. A stage
whose upstream job fails is cancelled by SLURM (``--kill-on-invalid-dep=yes``). Without SLURM the
same stages run here, in order, after the pre-training; a stage whose upstream failed is skipped.

``--stage-args STAGE='ARGS'`` passes ``ARGS`` to one stage: launcher flags among them (``--time``,
``--gpus-per-node`` ...) set that stage's SLURM request, the rest are the task's own arguments, as
on its entry script (``--config NAME``, ``--data DIR``, ``key=value``). A task of one's own is
``NAME=package.module``: the module is imported (it registers the task ``NAME``) and the stage
runs after the stage its task consumes. (A script path is no longer accepted: the job would have
to import a script.)
"""

from __future__ import annotations

import argparse
import copy
import importlib
import shlex
import sys
from dataclasses import dataclass

from maskalign.errors import ConfigError, UserError
from maskalign.launch import add_launcher_args, launch, slurm_available
from maskalign.tasks import PRETRAIN, JobSpec, Task, TaskJob, get_task, registered_tasks
from maskalign.transfer.cli import add_task_args, build_spec


@dataclass(frozen=True)
class Stage:
    """One stage: a registered task, the stage whose checkpoint it consumes, the module that defines it."""

    name: str
    after: str
    module: str

    @property
    def task(self) -> Task:
        return get_task(self.name, self.module)


def _stage(task: Task) -> Stage:
    return Stage(task.name, task.consumes, task.module)


def parse_stages(text: str) -> list[Stage]:
    """``finetune,robustness,mine=my_pkg.tasks`` -> stages, upstream before downstream."""
    stages: list[Stage] = []
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        name, sep, module = (p.strip() for p in item.partition("="))
        if sep:
            if module.endswith(".py") or "/" in module:
                raise ConfigError(f"pipeline: {item!r}: give the module that registers task {name!r} "
                                    f"(NAME=package.module), not a script path")
            try:
                importlib.import_module(module)
            except ImportError as e:
                raise ConfigError(f"pipeline: {item!r}: cannot import {module} ({e})") from None
        tasks = registered_tasks()
        if name not in tasks:
            where = f"{module} registers no task {name!r}" if sep else f"unknown stage {name!r}"
            raise ConfigError(f"pipeline: {where}; known: {', '.join(tasks)} (or NAME=package.module)")
        stage = _stage(tasks[name])
        if any(s.name == stage.name for s in stages):
            raise ConfigError(f"pipeline: stage {name!r} is listed twice")
        stages.append(stage)
    if not stages:
        raise ConfigError("pipeline: no stage given (e.g. --pipeline finetune,linprobe)")
    names = {s.name for s in stages}
    for s in stages:
        if s.after != PRETRAIN and s.after not in names:
            raise ConfigError(f"pipeline: stage {s.name!r} consumes {s.after!r}'s checkpoint; add {s.after} "
                                f"to --pipeline")
    ordered: list[Stage] = []
    while len(ordered) < len(stages):
        ready = [s for s in stages
                 if s not in ordered and (s.after == PRETRAIN or s.after in {o.name for o in ordered})]
        if not ready:
            raise ConfigError("pipeline: the stages depend on each other in a circle")
        ordered.extend(ready)
    return ordered


def parse_stage_args(items: list[str], stages: list[Stage]) -> dict[str, str]:
    """``--stage-args finetune='--config x optim.epochs=1'`` items -> {stage: args}."""
    out: dict[str, str] = {}
    names = {s.name for s in stages}
    for item in items:
        name, sep, rest = item.partition("=")
        if not sep or name not in names:
            raise ConfigError(f"pipeline: --stage-args {item!r}: expected STAGE='ARGS' with STAGE one of "
                                f"{', '.join(sorted(names))}")
        out[name] = (out.get(name, "") + " " + rest).strip()
    return out


def split_stage_args(base: argparse.Namespace, text: str, task: Task) -> argparse.Namespace:
    """One namespace for a stage: launcher flags in ``text`` override ``base``'s (the pre-training's
    job name and dependency are not inherited); the rest are parsed as the task's own arguments."""
    launcher = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    add_launcher_args(launcher)
    ns = copy.copy(base)
    ns.job_name, ns.dependency = None, None
    own = argparse.ArgumentParser(prog=f"--stage-args {task.name}=", add_help=False, allow_abbrev=False)
    add_task_args(own, task, ckpt_required=False)
    try:
        ns, rest = launcher.parse_known_args(shlex.split(text), namespace=ns)
        mine = own.parse_intermixed_args(rest)
    except SystemExit:
        raise ConfigError(f"pipeline: cannot parse stage arguments {text!r} for {task.name}") from None
    if mine.output_dir or mine.name or any(o.startswith(("output_dir=", "name=")) for o in mine.overrides):
        raise ConfigError(f"pipeline: --stage-args {task.name}: the pipeline sets the run folder "
                            f"(<output>/{task.name}/<pre-training run>); drop --output-dir/--name")
    for key, value in vars(mine).items():
        setattr(ns, key, value)
    return ns


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


@dataclass
class PlannedStage:
    """One stage of one pre-training run, checked and ready to launch."""

    stage: Stage
    run: PretrainRun
    args: argparse.Namespace
    spec: JobSpec


def plan_pipeline(stages: list[Stage], runs: list[PretrainRun], args: argparse.Namespace,
                  stage_args: dict[str, str] | None = None) -> list[PlannedStage]:
    """Every stage of every run as a checked job spec (config, overrides, data), before anything is
    launched: a bad stage argument fails here, in one line, not after the pre-training started."""
    stage_args = stage_args or {}
    plan = []
    for run in runs:
        for stage in stages:
            task = stage.task
            ns = split_stage_args(args, stage_args.get(stage.name, ""), task)
            try:
                spec = build_spec(task, ns, None, run=run.name, output_root=run.output_root)
            except UserError as e:  # named for its stage, once
                if str(e).startswith("pipeline: "):
                    raise
                raise type(e)(f"pipeline: {stage.name}: {e}") from None
            plan.append(PlannedStage(stage, run, ns, spec))
    return plan


def run_pipeline(stages: list[Stage], runs: list[PretrainRun], args: argparse.Namespace,
                 stage_args: dict[str, str] | None = None, slurm: bool = False,
                 plan: list[PlannedStage] | None = None) -> list[StageOutcome]:
    """Submit (``slurm``) or run here, in order, every stage for every pre-training run.

    ``plan`` is :func:`plan_pipeline`'s (made before the pre-training was launched); without it the
    stages are planned now. ``runs`` carry the pre-training's job ids and whether it succeeded.
    """
    plan = plan if plan is not None else plan_pipeline(stages, runs, args, stage_args)
    dry = bool(getattr(args, "dry_run", False))
    outcomes: list[StageOutcome] = []
    done: dict[tuple[str, str], StageOutcome] = {}
    for item in plan:
        stage, run = item.stage, item.run
        up = done.get((stage.after, run.name)) if stage.after != PRETRAIN else None
        if stage.after == PRETRAIN and not run.ok:
            oc = StageOutcome(stage.name, run.name, "skipped", f"pretrain/{run.name} failed")
        elif up is not None and up.status not in ("submitted", "done", "planned"):
            oc = StageOutcome(stage.name, run.name, "skipped", f"{stage.after}/{run.name} {up.status}")
        else:
            upstream_job = run.job_id if stage.after == PRETRAIN else (up.job_id if up else None)
            dependency = f"afterok:{upstream_job}" if slurm and upstream_job else None
            if slurm and dry and dependency is None:
                dependency = f"afterok:<{stage.after}:{run.name}>"
            oc = _launch_stage(item, dependency, slurm, dry)
        if oc.status == "skipped":
            print(f"[pipeline] skipping {stage.name}/{run.name}: {oc.detail}", flush=True)
        done[(stage.name, run.name)] = oc
        outcomes.append(oc)
    return outcomes


def _launch_stage(item: PlannedStage, dependency: str | None, slurm: bool, dry: bool) -> StageOutcome:
    task, run, ns = item.stage.task, item.run, copy.copy(item.args)
    if not slurm and slurm_available():
        ns.local = True  # the pre-training ran here (--local): so do its stages
    try:
        result = launch(TaskJob(item.spec, task.module), ns, item.spec.folder, f"{task.name}:{run.name}",
                        dependency=dependency)
    except Exception as e:  # one failed stage does not stop the others
        if slurm or dry:
            raise
        print(f"[pipeline] {task.name}/{run.name} failed: {e}", file=sys.stderr, flush=True)
        return StageOutcome(task.name, run.name, "failed", str(e))
    if dry:
        return StageOutcome(task.name, run.name, "planned")
    if slurm:
        return StageOutcome(task.name, run.name, "submitted", f"after {dependency}", job_id=result.job_id)
    return StageOutcome(task.name, run.name, "done", str((result.result or {}).get("record", "")))


def print_summary(outcomes: list[StageOutcome]) -> None:
    """One line per stage and run: what happened to it."""
    if not outcomes:
        return
    print("[pipeline] stages:")
    for oc in outcomes:
        job = f" job {oc.job_id}" if oc.job_id else ""
        print(f"[pipeline]   {oc.stage}/{oc.run}: {oc.status}{job}{' - ' + oc.detail if oc.detail else ''}")
