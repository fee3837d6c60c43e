"""The launcher's command line: cluster flags, the SLURM request they describe, time limits.

``add_launcher_args`` adds the flags every entry script shares (``--local``, ``--slurm``,
``--dry-run``, ``--nodes``, ``--gpus-per-node``, ``--time`` ...); ``ClusterSpec.from_args`` turns
them into a validated request and ``ClusterSpec.sbatch_params`` into submitit's parameters.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from maskalign.errors import ConfigError

DEFAULT_TIME = "72:00:00"
DEFAULT_SIGNAL_DELAY_S = 120
DEFAULT_MAX_REQUEUES = 30
_DEPENDENCY_TYPES = ("after", "afterany", "afterok", "afternotok", "aftercorr", "afterburstbuffer")
_JOB_REF = re.compile(r"^[0-9]+(_[0-9]+)?(\+[0-9]+)?$")


def get_args_parser(description: str | None = None, parents: list[argparse.ArgumentParser] | None = None,
                    add_help: bool = True) -> argparse.ArgumentParser:
    """A parser holding only the cluster flags (entry scripts add theirs, or pass ``parents``)."""
    p = argparse.ArgumentParser(description=description, parents=parents or [], add_help=add_help)
    add_launcher_args(p)
    return p


def add_launcher_args(p: argparse.ArgumentParser) -> None:
    """The cluster flags, as one argument group of ``p``."""
    g = p.add_argument_group("launcher (SLURM through submitit, or this machine)")
    where = g.add_mutually_exclusive_group()
    where.add_argument("--local", action="store_true", help="run on this machine even if SLURM is present")
    where.add_argument("--slurm", action="store_true", help="submit to SLURM (error if there is no sbatch)")
    g.add_argument("--dry-run", action="store_true",
                   help="print the resolved config and the sbatch script; submit and run nothing")
    g.add_argument("--nodes", type=int, default=1)
    g.add_argument("--gpus-per-node", type=int, default=8, help="0 for CPU nodes (default: 8)")
    g.add_argument("--tasks-per-node", type=int, default=None,
                   help="processes per node (default: one per GPU, or 1 without GPUs)")
    g.add_argument("--cpus-per-task", type=int, default=10)
    g.add_argument("--mem-gb", type=float, default=None,
                   help="memory per node in GB (default: 40 per GPU; the cluster's default without GPUs)")
    g.add_argument("--partition", default=None, help="(default: the cluster's default partition)")
    g.add_argument("--account", default=None)
    g.add_argument("--qos", default=None)
    g.add_argument("--time", default=DEFAULT_TIME, help=f"time limit: minutes or [D-]HH:MM:SS (default {DEFAULT_TIME})")
    g.add_argument("--constraint", default=None, help="node features, e.g. volta32gb")
    g.add_argument("--exclude", default=None, help="nodes to avoid, e.g. gpu[001-003]")
    g.add_argument("--comment", default=None)
    g.add_argument("--job-name", default=None, help="(default: <kind>:<run>)")
    g.add_argument("--dependency", default=None, help="SLURM dependency, e.g. afterok:1234")
    g.add_argument("--signal-delay-s", type=int, default=DEFAULT_SIGNAL_DELAY_S,
                   help="USR2 this many seconds before the time limit: checkpoint and requeue")
    g.add_argument("--max-requeues", type=int, default=DEFAULT_MAX_REQUEUES,
                   help="time-outs after which a job is no longer requeued")
    g.add_argument("--sbatch", action="append", default=[], metavar="KEY=VALUE",
                   help="any other sbatch option, e.g. --sbatch mail-type=END (repeatable)")
    g.add_argument("--setup", action="append", default=[], metavar="CMD",
                   help="shell line run before the job starts, e.g. 'module load cuda' (repeatable)")


def parse_time_minutes(text: str) -> int:
    """SLURM time formats: ``M``, ``M:S``, ``H:M:S``, ``D-H``, ``D-H:M``, ``D-H:M:S``; seconds round up."""
    t = str(text).strip()
    bad = ConfigError(f"launcher: cannot parse time limit {text!r} "
                      "(use minutes or [D-]HH:MM:SS, e.g. 90 or 1-12:00:00)")
    if not re.fullmatch(r"(\d+-)?\d+(:\d+){0,2}", t):
        raise bad
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
        else:
            h, m, s = parts
    total = days * 1440 + h * 60 + m + (1 if s else 0)
    if total <= 0:
        raise ConfigError(f"launcher: time limit {text!r} is not positive")
    return total


def opt(args: argparse.Namespace, name: str, default: Any = None) -> Any:
    """Flags read with defaults, so that namespaces built by older callers keep working."""
    return getattr(args, name, default)


@dataclass
class ClusterSpec:
    """A validated SLURM request, as the launcher's flags describe it."""

    nodes: int = 1
    gpus_per_node: int = 0
    tasks_per_node: int = 1
    cpus_per_task: int = 1
    mem_gb: float | None = None
    time_min: int = 60
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    exclude: str | None = None
    comment: str | None = None
    job_name: str | None = None
    dependency: str | None = None
    signal_delay_s: int = DEFAULT_SIGNAL_DELAY_S
    max_requeues: int = DEFAULT_MAX_REQUEUES
    extra: dict[str, str] = field(default_factory=dict)
    setup: list[str] = field(default_factory=list)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ClusterSpec:
        gpus = int(opt(args, "gpus_per_node", 8))
        tasks = opt(args, "tasks_per_node")
        spec = cls(
            nodes=int(opt(args, "nodes", 1)), gpus_per_node=gpus,
            tasks_per_node=int(tasks) if tasks is not None else max(gpus, 1),
            cpus_per_task=int(opt(args, "cpus_per_task", 10)), mem_gb=opt(args, "mem_gb"),
            time_min=parse_time_minutes(opt(args, "time", DEFAULT_TIME)),
            partition=opt(args, "partition"), account=opt(args, "account"), qos=opt(args, "qos"),
            constraint=opt(args, "constraint"), exclude=opt(args, "exclude"), comment=opt(args, "comment"),
            job_name=opt(args, "job_name"), dependency=opt(args, "dependency"),
            signal_delay_s=int(opt(args, "signal_delay_s", DEFAULT_SIGNAL_DELAY_S)),
            max_requeues=int(opt(args, "max_requeues", DEFAULT_MAX_REQUEUES)),
            extra=parse_extra(opt(args, "sbatch", []) or []), setup=list(opt(args, "setup", []) or []))
        spec.validate()
        return spec

    def validate(self) -> None:
        for name, low in (("nodes", 1), ("gpus_per_node", 0), ("tasks_per_node", 1), ("cpus_per_task", 1),
                          ("signal_delay_s", 0), ("max_requeues", 0)):
            if getattr(self, name) < low:
                raise ConfigError(f"launcher: --{name.replace('_', '-')} must be at least {low}, "
                                  f"got {getattr(self, name)}")
        if self.mem_gb is not None and self.mem_gb < 0:
            raise ConfigError(f"launcher: --mem-gb must not be negative, got {self.mem_gb}")
        if self.gpus_per_node and self.tasks_per_node != self.gpus_per_node:
            raise ConfigError(f"launcher: one task per GPU: --tasks-per-node {self.tasks_per_node} "
                              f"differs from --gpus-per-node {self.gpus_per_node}")
        if self.dependency and not dependency_ok(self.dependency):
            raise ConfigError(f"launcher: cannot parse --dependency {self.dependency!r} (e.g. afterok:1234)")
        if self.signal_delay_s >= self.time_min * 60:
            raise ConfigError(f"launcher: --signal-delay-s {self.signal_delay_s} is not shorter than the "
                              f"time limit ({self.time_min} min)")

    def sbatch_params(self, name: str, dependency: str | None = None) -> dict[str, Any]:
        """Parameters of submitit's ``SlurmExecutor`` (sbatch options in submitit's spelling)."""
        params: dict[str, Any] = {"job_name": self.job_name or name, "time": self.time_min, "nodes": self.nodes,
                                  "ntasks_per_node": self.tasks_per_node, "cpus_per_task": self.cpus_per_task,
                                  "signal_delay_s": self.signal_delay_s}
        if self.gpus_per_node:
            params["gpus_per_node"] = self.gpus_per_node
        mem = self.mem_gb if self.mem_gb is not None else (40 * self.gpus_per_node if self.gpus_per_node else None)
        if mem is not None:
            params["mem"] = f"{int(mem)}GB" if mem == int(mem) else f"{int(mem * 1024)}MB"
        for key in ("partition", "account", "qos", "constraint", "exclude", "comment"):
            if getattr(self, key):
                params[key] = getattr(self, key)
        deps = [d for d in (self.dependency, dependency) if d]
        extra = dict(self.extra)
        if deps:
            params["dependency"] = ",".join(deps)
            # A dependency that can never be satisfied (a failed upstream job) cancels this job
            # instead of leaving it pending forever.
            extra.setdefault("kill-on-invalid-dep", "yes")
        if extra:
            params["additional_parameters"] = extra
        if self.setup:
            params["setup"] = list(self.setup)
        return params

    def describe(self) -> str:
        what = f"{self.gpus_per_node} GPUs" if self.gpus_per_node else "no GPU"
        return (f"{self.nodes} node(s) x {self.tasks_per_node} task(s) ({what}, {self.cpus_per_task} CPUs per task), "
                f"{self.time_min} min, partition {self.partition or '(default)'}")


def dependency_ok(text: str) -> bool:
    """``afterok:12:13_2,afterany:14`` style (``,`` = all of, ``?`` = any of) or ``singleton``."""
    for item in re.split(r"[,?]", text):
        kind, *jobs = item.split(":")
        if kind == "singleton" and not jobs:
            continue
        if kind not in _DEPENDENCY_TYPES or not jobs or not all(_JOB_REF.match(j) for j in jobs):
            return False
    return True


def parse_extra(items: Sequence[str]) -> dict[str, str]:
    """``--sbatch KEY=VALUE`` items -> ``{key: value}`` (a bare ``KEY`` is a flag without value)."""
    out = {}
    for item in items:
        key, sep, val = str(item).partition("=")
        key = key.strip().lstrip("-")
        if not key:
            raise ConfigError(f"launcher: --sbatch {item!r} is not KEY=VALUE")
        out[key] = val if sep else True
    return out
