"""Launch pre-training: ``python pretrain/submit.py [CONFIG] [key=value ...] [options] [cluster flags]``.

Flags, the config and the overrides go in any order. With no arguments it runs the built-in
default (a tiny MaskAlign student on the demo world) on this machine. With SLURM present the job
is submitted (``--local`` runs here anyway; ``--dry-run`` prints the resolved config and the sbatch
script). ``--sweep FILE`` submits every run of a sweep file as one job array; ``--pipeline
finetune,linprobe,robustness,coco,ade20k`` also submits the transfer jobs that consume the
encoder, as jobs that start when pre-training has succeeded. Configs and sweeps live in
maskalign/configs/pretrain/ and maskalign/configs/sweeps/. See docs/slurm.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from maskalign.config import config_dir, find_config_file, load_config, to_plain
from maskalign.engine.task import PretrainTask
from maskalign.errors import UserError
from maskalign.launch import ARRAYS_DIR, launch, launch_array, use_slurm
from maskalign.launch import get_args_parser as launcher_parser

CONFIG_DIR = config_dir("pretrain")
SWEEP_DIR = config_dir("sweeps")


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = launcher_parser("MaskAlign-suite pre-training", add_help=add_help)
    p.add_argument("config", nargs="?", default=None,
                   help=f"experiment config: a path or a name in {CONFIG_DIR} (default: the demo default)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. optim.epochs=10 mask.ratio=0.5")
    p.add_argument("--sweep", default=None, metavar="FILE",
                   help=f"sweep file (a path or a name in {SWEEP_DIR}) {{base:, runs: [{{name:, overrides: [...]}}]}}: "
                        "one array job, one run per entry; key=value overrides on the command line apply to every run")
    p.add_argument("--pipeline", default=None, metavar="STAGES",
                   help="also submit these tasks on the encoder, as jobs that depend on pre-training: "
                        "finetune,robustness,linprobe,coco,ade20k (or NAME=package.module for a task of one's own)")
    p.add_argument("--stage-args", action="append", default=[], metavar="STAGE=ARGS",
                   help="arguments for one pipeline stage: launcher flags set its SLURM request, the rest are the "
                        "task's own, e.g. --stage-args finetune='--config maskalign_vitb16 --time 24:00:00'")
    return p


def _configs(args: argparse.Namespace) -> tuple[list, str | None]:
    """The resolved config(s) to run, and the array name for a sweep."""
    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config:  # only overrides were given
        config, overrides = None, [config, *overrides]
    if args.sweep is None:
        return [load_config(config, overrides, CONFIG_DIR)], None
    from maskalign.sweeps import load_sweep

    if config is not None:
        raise UserError(f"give either a config ({config}) or --sweep, not both: the sweep names its base")
    sweep = load_sweep(find_config_file(args.sweep, SWEEP_DIR, ".yaml") or args.sweep)
    base = sweep.base_path(CONFIG_DIR)
    cfgs = [load_config(base, [*run.overrides, *overrides, f"name={run.name}"], CONFIG_DIR) for run in sweep.runs]
    return cfgs, sweep.name


def main(args: argparse.Namespace) -> int:
    from maskalign import pipeline as pl

    outs: list[Path] = []
    try:
        cfgs, sweep_name = _configs(args)
        # a demo runs here when SLURM does not answer
        args.local_fallback = all(cfg.data.dataset == "demo" for cfg in cfgs)
        stages = pl.parse_stages(args.pipeline) if args.pipeline else []
        stage_args = pl.parse_stage_args(args.stage_args, stages) if stages else {}
        slurm = use_slurm(args)
        tasks = [PretrainTask(to_plain(cfg)) for cfg in cfgs]
        outs = [t.run_folder for t in tasks]
        runs = [pl.PretrainRun(t.cfg["name"], str(Path(str(t.cfg["output_dir"])).resolve())) for t in tasks]
        plan = pl.plan_pipeline(stages, runs, args, stage_args) if stages else []  # checked before launching
        if sweep_name is None:
            launched = launch(tasks[0], args, outs[0], f"pretrain:{cfgs[0].name}")
        else:
            launched = launch_array(tasks, args, outs, f"pretrain:{sweep_name}",
                                    outs[0].parent / ARRAYS_DIR / sweep_name)
        for res in launched.results:
            if isinstance(res, dict) and "encoder" in res:
                print(f"\nDone. Encoder checkpoint: {res['encoder']}\n"
                      f"Resume state: {Path(res['out_dir']) / 'checkpoint.pth'}\n"
                      f"Next: python transfer/finetune.py --ckpt {res['encoder']}")
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
    sys.exit(main(get_args_parser().parse_intermixed_args()))
