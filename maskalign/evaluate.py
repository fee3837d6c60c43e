"""Many encoders through the chosen protocols in one command, then one table: ``transfer/evaluate.py``.

    python transfer/evaluate.py --ckpt A [--ckpt B ...] [--protocols finetune,linprobe,robustness]
                                [--output-dir ROOT] [--stage-args finetune='optim.epochs=5' ...]
                                [--local | --slurm ...]

Every ``--ckpt`` (a file, ``timm:...`` or ``open_clip:...``) is read first -- a bad one fails in
one line before anything runs -- and gets the runs a transfer script would give it, under their
default names (unique per source, :mod:`maskalign.tasks.identity`). On this machine the runs go
one after another; on SLURM each encoder x protocol is its own job with its own resources, and
robustness waits for its fine-tune (``afterok``). A run whose folder already holds this source's
record is not run again, so running the same command again runs only what is missing or failed.
This machine then writes the tables (``<root>/tables``); after a SLURM submission it says how to
make them when the jobs end. The stages are the pipeline's (:mod:`maskalign.pipeline`): the same
jobs, dependencies and per-stage arguments (``--stage-args``), hung off encoders instead of a
pre-training run.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from maskalign.config import default_output_root
from maskalign.errors import UserError
from maskalign.launch import get_args_parser as launcher_parser
from maskalign.launch import use_slurm
from maskalign.pipeline import (
    PlannedStage,
    PretrainRun,
    parse_stage_args,
    parse_stages,
    print_summary,
    run_pipeline,
    split_stage_args,
)
from maskalign.records import RECORD_FILENAME
from maskalign.tasks import PRETRAIN
from maskalign.tasks.identity import check_identity, identity_of, source_identity
from maskalign.transfer.cli import build_spec, on_demo_data

DEFAULT_PROTOCOLS = "finetune,linprobe,robustness"


def get_args_parser() -> argparse.ArgumentParser:
    p = launcher_parser("Evaluate encoders: every protocol for every --ckpt, then the tables")
    g = p.add_argument_group("evaluation")
    g.add_argument("--ckpt", action="append", required=True,
                   help="an encoder (repeat for several): a checkpoint file of this project or a published one "
                        "(MAE, DINOv2, DeiT III, CLIP, timm ...; options after '#'), timm:<name> or "
                        "open_clip:<model>/<tag>")
    g.add_argument("--protocols", default=DEFAULT_PROTOCOLS,
                   help=f"comma-separated tasks (default: {DEFAULT_PROTOCOLS}; also coco, ade20k)")
    g.add_argument("--output-dir", dest="output_dir", default=None,
                   help="output root (default: $MASKALIGN_OUTPUT, else output); tables go to <root>/tables")
    g.add_argument("--stage-args", action="append", default=[], metavar="PROTOCOL='ARGS'",
                   help="arguments of one protocol's runs (--config, key=value, launcher flags such as --time)")
    g.add_argument("--seeds", default=None,
                   help="comma-separated seeds: each protocol runs once per seed (runs <name>-seed<N>); the tables "
                        "print mean ± std (n) over them (default: the config's one seed)")
    g.add_argument("--no-tables", action="store_true", help="do not write the tables at the end")
    return p


@dataclass
class Encoder:
    """One ``--ckpt``: its spec (made absolute), readable name and identity."""

    spec: str
    name: str
    source: dict[str, str]


def read_encoders(ckpts: Sequence[str]) -> list[Encoder]:
    """Read every encoder now: a bad file fails here, in one line, before any job."""
    from maskalign.encoders.source_spec import absolute_spec
    from maskalign.tasks import get_task

    out, seen = [], {}
    for ckpt in ckpts:
        spec = absolute_spec(ckpt)
        name = get_task("finetune").check_source(ckpt)
        source = source_identity(spec)
        key = source.get("sha256") or source.get("hub")
        if key in seen:
            raise UserError(f"--ckpt {ckpt}: the same encoder as --ckpt {seen[key]}")
        seen[key] = ckpt
        out.append(Encoder(spec, name, source))
    return out


def plan(encoders: list[Encoder], protocols: str, args: argparse.Namespace, root: str) -> tuple[
        list[PlannedStage], list[PretrainRun], list[str]]:
    """The runs still to do (checked now), the encoders as pipeline "runs", and the runs already done."""
    stages = parse_stages(protocols)
    stage_args = parse_stage_args(list(args.stage_args), stages)
    seeds: list[int | None] = [None]
    if args.seeds:
        try:
            seeds = [int(x) for x in str(args.seeds).split(",") if x.strip()]
        except ValueError:
            raise UserError(f"--seeds {args.seeds!r}: give integers joined by commas, e.g. --seeds 0,1,2") from None
    todo, runs, done = [], [], []
    for enc in encoders:
        for seed in seeds:  # one pipeline "run" per encoder and seed: robustness waits for its own fine-tune
            run = PretrainRun(enc.name if seed is None else f"{enc.name}-seed{seed}", root)
            runs.append(run)
            upstream_run: dict[str, str] = {}
            for stage in stages:
                task = stage.task
                ns = split_stage_args(args, stage_args.get(stage.name, ""), task)
                try:
                    if stage.after == PRETRAIN:
                        spec = build_spec(task, ns, enc.spec, source_run=enc.name, output_root=root,
                                          source=enc.source)
                        if seed is not None:  # one run per seed: its own folder, its own seed
                            ns.overrides = [*ns.overrides, f"seed={seed}"]
                            spec = build_spec(task, ns, enc.spec, run=f"{spec.run}-seed{seed}", output_root=root)
                        check_identity(spec.folder, identity_of(spec, task.rerun_keys))
                    else:  # robustness: the fine-tune's classifier, in a folder named as the fine-tune's
                        spec = build_spec(task, ns, None, run=upstream_run[stage.after], output_root=root)
                except UserError as e:  # named for its encoder and protocol, once
                    if str(e).startswith("evaluate: "):
                        raise
                    raise type(e)(f"evaluate: {enc.spec}: {stage.name}: {e}") from None
                upstream_run[stage.name] = spec.run
                if (spec.folder / RECORD_FILENAME).is_file() and stage.name not in _redo_after(todo, run):
                    done.append(f"{stage.name}/{spec.run}")
                    continue
                todo.append(PlannedStage(stage, run, ns, spec))
    return todo, runs, done


def _redo_after(todo: list[PlannedStage], run: PretrainRun) -> set[str]:
    """Stages of one encoder and seed that consume a stage that runs again (their record would be stale)."""
    again = {p.stage.name for p in todo if p.run is run}
    from maskalign.tasks import registered_tasks

    return {name for name, t in registered_tasks().items() if t.consumes in again}


def main(args: argparse.Namespace) -> int:
    root = str(Path(args.output_dir or default_output_root()).resolve())
    try:
        encoders = read_encoders(args.ckpt)
        todo, runs, done = plan(encoders, args.protocols, args, root)
        args.local_fallback = all(on_demo_data(p.spec) for p in todo)  # demo runs: here when SLURM is silent
        slurm = use_slurm(args)
        for line in done:
            print(f"[evaluate] {line}: done already (record.json); not run again")
        print(f"[evaluate] {len(encoders)} encoders, {len(todo)} runs to do "
              f"({'SLURM' if slurm else 'dry run' if args.dry_run else 'this machine'})", flush=True)
        outcomes = run_pipeline([], runs, args, plan=todo, slurm=slurm) if todo else []
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print_summary(outcomes)
    failed = [o for o in outcomes if o.status in ("failed", "skipped")]
    if args.dry_run:
        return 0
    if slurm and todo:
        print(f"[evaluate] when the jobs end: python results/make_tables.py --root {root} "
              f"(or run this command again: it runs only what is missing, then writes the tables)")
        return 0
    if not args.no_tables:
        _tables(root)
    return 1 if failed else 0


def _tables(root: str) -> None:
    from maskalign.results.render_all import make_tables

    summary = make_tables(root)
    for line in summary.errors:
        print(line, file=sys.stderr)
    for line in summary.grouped:
        print(f"[evaluate] grouped {line}")
    for line in summary.left_out:
        print(f"[evaluate] left out {line}")
    t1 = summary.tables["table1"].frame
    ours = t1[(t1["Source"] == "ours") & (t1["Run"] != "—")]
    if len(ours):
        print(ours.drop(columns=["Source"]).to_string(index=False))
    print(f"[evaluate] tables in {summary.out}")


def run(argv: Sequence[str] | None = None) -> int:
    return main(get_args_parser().parse_intermixed_args(argv))


__all__ = ["DEFAULT_PROTOCOLS", "get_args_parser", "main", "run"]
