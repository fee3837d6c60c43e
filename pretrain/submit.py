"""Launch pre-training: ``python pretrain/submit.py [--config NAME] [--output-dir ROOT] [--name RUN] [--data DIR]
[key=value ...] [--local | cluster flags]``, the same flags as every transfer script (``cli.run("pretrain")``).

Flags and overrides go in any order; a first bare word is the config (``submit.py maskalign_vitb16_clipb16_200ep``
is ``--config maskalign_vitb16_clipb16_200ep``). With no arguments it runs the built-in default (a tiny
MaskAlign student on the demo world) on this machine. With SLURM present the job is submitted
(``--local`` runs here anyway; ``--dry-run`` prints the resolved config and the sbatch script).
``--sweep FILE`` submits every run of a sweep file as one job array; ``--pipeline
finetune,linprobe,robustness,coco,ade20k`` also submits the tasks that consume the encoder, as jobs that
start when pre-training has succeeded. Configs and sweeps live in maskalign/configs/pretrain/ and
maskalign/configs/sweeps/. See docs/slurm.md.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from maskalign.config import config_dir, find_config_file
from maskalign.errors import UserError
from maskalign.launch import ARRAYS_DIR, launch, launch_array, use_slurm
from maskalign.tasks import TaskJob, get_task
from maskalign.transfer import cli

TASK = "pretrain"
SWEEP_DIR = config_dir("sweeps")


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = cli.get_args_parser(TASK, add_help=add_help)
    g = p.add_argument_group("pre-training only")
    g.add_argument("--sweep", default=None, metavar="FILE",
                   help=f"sweep file (a path or a name in {SWEEP_DIR}) {{base:, runs: [{{name:, overrides: [...]}}]}}: "
                        "one array job, one run per entry; key=value overrides on the command line apply to every run")
    g.add_argument("--pipeline", default=None, metavar="STAGES",
                   help="also submit these tasks on the encoder, as jobs that depend on pre-training: "
                        "finetune,robustness,linprobe,coco,ade20k (or NAME=package.module for a task of one's own)")
    g.add_argument("--stage-args", action="append", default=[], metavar="STAGE=ARGS",
                   help="arguments for one pipeline stage: launcher flags set its SLURM request, the rest are the "
                        "task's own, e.g. --stage-args finetune='--config maskalign_vitb16 --time 24:00:00'")
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Flags anywhere; a first bare word (no ``=``) is the config, as in ``submit.py NAME key=value``."""
    args = get_args_parser().parse_intermixed_args(argv)
    if args.overrides and "=" not in args.overrides[0]:
        if args.config is not None:
            raise SystemExit(f"error: two configs given: --config {args.config} and {args.overrides[0]}")
        args.config, args.overrides = args.overrides[0], args.overrides[1:]
    return args


def _jobs(args: argparse.Namespace) -> tuple[list[TaskJob], str | None]:
    """The job(s) to launch, and the array name for a sweep."""
    task = get_task(TASK)
    if args.sweep is None:
        return [TaskJob(cli.build_spec(task, args, None), task.module)], None
    from maskalign.sweeps import load_sweep

    if args.config is not None:
        raise UserError(f"give either a config ({args.config}) or --sweep, not both: the sweep names its base")
    if args.name is not None:
        raise UserError(f"--name {args.name}: a sweep names each of its runs")
    sweep = load_sweep(find_config_file(args.sweep, SWEEP_DIR, ".yaml") or args.sweep)
    base = str(sweep.base_path(task.config_dir))
    jobs = []
    for run in sweep.runs:
        one = argparse.Namespace(**{**vars(args), "config": base, "name": run.name,
                                    "overrides": [*run.overrides, *args.overrides]})
        jobs.append(TaskJob(cli.build_spec(task, one, None), task.module))
    return jobs, sweep.name


def main(args: argparse.Namespace) -> int:
    from maskalign import pipeline as pl

    task = get_task(TASK)
    outs: list[Path] = []
    try:
        jobs, sweep_name = _jobs(args)
        # a demo runs here when SLURM does not answer
        args.local_fallback = all(job.spec.resolved["data"]["dataset"] == "demo" for job in jobs)
        stages = pl.parse_stages(args.pipeline) if args.pipeline else []
        stage_args = pl.parse_stage_args(args.stage_args, stages) if stages else {}
        slurm = use_slurm(args)
        outs = [job.folder for job in jobs]
        runs = [pl.PretrainRun(job.spec.run, job.spec.output_root) for job in jobs]
        plan = pl.plan_pipeline(stages, runs, args, stage_args) if stages else []  # checked before launching
        if sweep_name is None:
            launched = launch(jobs[0], args, outs[0], f"{TASK}:{jobs[0].spec.run}")
        else:
            launched = launch_array(jobs, args, outs, f"{TASK}:{sweep_name}", outs[0].parent / ARRAYS_DIR / sweep_name)
        for res in launched.results:
            if isinstance(res, dict):
                print("\n" + task.summary(res))
        outcomes = []
        if stages:
            for run, job_id, res in zip(runs, launched.job_ids, launched.results):
                run.job_id = job_id
                run.ok = launched.mode != "local" or (isinstance(res, dict) and "encoder" in res)
            outcomes = pl.run_pipeline(stages, runs, args, stage_args, slurm=slurm, plan=plan)
            pl.print_summary(outcomes)
    except (UserError, FloatingPointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if launched.mode == "slurm":
        print(f"\nFollow the jobs with: python -m maskalign.jobs status {outs[0].parent.parent}")
    failed = launched.failed or any(oc.status == "failed" for oc in outcomes)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
