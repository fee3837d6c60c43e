"""The one launcher every entry script uses: SLURM through submitit, or this machine.

``get_args_parser`` adds the cluster flags; ``launch(task, ...)`` submits a picklable task (an
object with ``__call__`` and ``checkpoint``) as one task per GPU on SLURM, or calls it in this
process when there is no SLURM (or ``--local``). On preemption or time-out submitit calls
``task.checkpoint()``, which requeues the same task; the task resumes from the newest complete
checkpoint in its output folder.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any


def slurm_available() -> bool:
    return shutil.which("sbatch") is not None


def get_args_parser(description: str | None = None, parents: list[argparse.ArgumentParser] | None = None,
                    add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, parents=parents or [], add_help=add_help)
    g = p.add_argument_group("launcher (SLURM through submitit, or this machine)")
    where = g.add_mutually_exclusive_group()
    where.add_argument("--local", action="store_true", help="run on this machine even if SLURM is present")
    where.add_argument("--slurm", action="store_true", help="submit to SLURM (fail if it is absent)")
    g.add_argument("--nodes", type=int, default=1)
    g.add_argument("--gpus-per-node", type=int, default=8, help="one task per GPU")
    g.add_argument("--cpus-per-task", type=int, default=10)
    g.add_argument("--mem-gb", type=int, default=None, help="per node (default: 40 GB per GPU)")
    g.add_argument("--partition", default=None)
    g.add_argument("--account", default=None)
    g.add_argument("--qos", default=None)
    g.add_argument("--time", default="72:00:00", help="time limit, minutes or [D-]HH:MM:SS")
    g.add_argument("--constraint", default=None)
    g.add_argument("--comment", default=None)
    g.add_argument("--job-name", default=None)
    return p


def use_slurm(args: argparse.Namespace) -> bool:
    if args.local:
        return False
    if args.slurm and not slurm_available():
        raise SystemExit("launcher: --slurm given but no sbatch on PATH")
    return slurm_available()


def parse_time_minutes(text: str) -> int:
    """SLURM time formats: ``M``, ``H:M:S``, ``D-H``, ``D-H:M``, ``D-H:M:S``."""
    t = str(text).strip()
    try:
        days = 0
        if "-" in t:
            d, t = t.split("-", 1)
            days = int(d)
            parts = [int(x) for x in t.split(":")] + [0, 0]
            h, m, s = parts[0], parts[1], parts[2]
        else:
            parts = [int(x) for x in t.split(":")]
            if len(parts) == 1:
                h, m, s = 0, parts[0], 0
            elif len(parts) == 2:
                h, m, s = 0, parts[0], parts[1]
            elif len(parts) == 3:
                h, m, s = parts
            else:
                raise ValueError
    except ValueError:
        raise SystemExit(f"launcher: cannot parse time limit {text!r} (use minutes or [D-]HH:MM:SS)") from None
    total = days * 1440 + h * 60 + m + (1 if s else 0)
    if total <= 0:
        raise SystemExit(f"launcher: time limit {text!r} is not positive")
    return total


def launch(task: Any, args: argparse.Namespace, folder: Path, name: str) -> Any:
    """Submit ``task`` to SLURM, or run it here; returns the submitit job or the task's result."""
    folder = Path(folder)
    if not use_slurm(args):
        print(f"[launcher] no SLURM here (or --local): running {name} on this machine", flush=True)
        return task()
    import submitit

    minutes = parse_time_minutes(args.time)
    executor = submitit.AutoExecutor(folder=folder / "submitit" / "%j", slurm_max_num_timeout=30)
    params: dict[str, Any] = dict(
        name=args.job_name or name, nodes=args.nodes, tasks_per_node=max(args.gpus_per_node, 1),
        cpus_per_task=args.cpus_per_task, timeout_min=minutes, slurm_signal_delay_s=120)
    if args.gpus_per_node > 0:
        params["gpus_per_node"] = args.gpus_per_node
    if args.mem_gb is not None or args.gpus_per_node > 0:
        params["mem_gb"] = args.mem_gb if args.mem_gb is not None else 40 * args.gpus_per_node
    for key, val in (("slurm_partition", args.partition), ("slurm_account", args.account),
                     ("slurm_qos", args.qos), ("slurm_constraint", args.constraint),
                     ("slurm_comment", args.comment)):
        if val:
            params[key] = val
    executor.update_parameters(**params)
    job = executor.submit(task)
    print(f"[launcher] submitted {name} as SLURM job {job.job_id}; logs in {folder / 'submitit'}", flush=True)
    return job
