"""The one launcher every entry script uses: SLURM through submitit, or this machine.

``get_args_parser`` adds the cluster flags; ``launch(task, args, folder, name)`` submits a
picklable task (an object with ``__call__`` and, for requeueing, ``checkpoint``) as one task per
GPU (one per node without GPUs) on SLURM, or calls it in this process when there is no SLURM or
``--local`` is given; ``launch_array`` submits several tasks as one SLURM job array. ``--dry-run``
prints the resolved config and the sbatch script instead of submitting.

Layout: a job's own outputs go to its run folder ``OUTPUT/<kind>/<run>/``; the launcher puts
``job.json`` (job id, parameters, command) there and submitit's files (submission script, pickles,
``<id>_<task>_log.{out,err}``) in ``OUTPUT/<kind>/<run>/submitit/<job id>/``. The tasks of an
array share ``OUTPUT/<kind>/_arrays/<array name>/<job id>/``, linked from each run's ``submitit/``.

Requeue contract: SLURM signals USR2 ``--signal-delay-s`` seconds before the time limit (and a
preemption can be delivered the same way); submitit then calls ``task.checkpoint()`` in the
main process, which returns the task to run again, requeues the job (same job id, so
dependencies keep waiting) and exits. The task resumes from the newest complete checkpoint in its
run folder. A job requeued by SLURM itself (``scontrol requeue``, preemption by SIGTERM) reruns
the same task, which resumes the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from maskalign.errors import UserError

DEFAULT_TIME = "72:00:00"
DEFAULT_SIGNAL_DELAY_S = 120
DEFAULT_MAX_REQUEUES = 30
ARRAYS_DIR = "_arrays"
JOB_INFO = "job.json"
_DEPENDENCY_TYPES = ("after", "afterany", "afterok", "afternotok", "aftercorr", "afterburstbuffer")
_JOB_REF = re.compile(r"^[0-9]+(_[0-9]+)?(\+[0-9]+)?$")


class LaunchError(UserError):
    """A launch that cannot go ahead; raised before anything is submitted."""


def slurm_available() -> bool:
    return shutil.which("sbatch") is not None


def get_args_parser(description: str | None = None, parents: list[argparse.ArgumentParser] | None = None,
                    add_help: bool = True) -> argparse.ArgumentParser:
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
    bad = LaunchError(f"launcher: cannot parse time limit {text!r} (use minutes or [D-]HH:MM:SS, e.g. 90 or 1-12:00:00)")
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
        raise LaunchError(f"launcher: time limit {text!r} is not positive")
    return total


def _opt(args: argparse.Namespace, name: str, default: Any = None) -> Any:
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
        gpus = int(_opt(args, "gpus_per_node", 8))
        tasks = _opt(args, "tasks_per_node")
        spec = cls(
            nodes=int(_opt(args, "nodes", 1)), gpus_per_node=gpus,
            tasks_per_node=int(tasks) if tasks is not None else max(gpus, 1),
            cpus_per_task=int(_opt(args, "cpus_per_task", 10)), mem_gb=_opt(args, "mem_gb"),
            time_min=parse_time_minutes(_opt(args, "time", DEFAULT_TIME)),
            partition=_opt(args, "partition"), account=_opt(args, "account"), qos=_opt(args, "qos"),
            constraint=_opt(args, "constraint"), exclude=_opt(args, "exclude"), comment=_opt(args, "comment"),
            job_name=_opt(args, "job_name"), dependency=_opt(args, "dependency"),
            signal_delay_s=int(_opt(args, "signal_delay_s", DEFAULT_SIGNAL_DELAY_S)),
            max_requeues=int(_opt(args, "max_requeues", DEFAULT_MAX_REQUEUES)),
            extra=_parse_extra(_opt(args, "sbatch", []) or []), setup=list(_opt(args, "setup", []) or []))
        spec.validate()
        return spec

    def validate(self) -> None:
        for name, low in (("nodes", 1), ("gpus_per_node", 0), ("tasks_per_node", 1), ("cpus_per_task", 1),
                          ("signal_delay_s", 0), ("max_requeues", 0)):
            if getattr(self, name) < low:
                raise LaunchError(f"launcher: --{name.replace('_', '-')} must be at least {low}, "
                                  f"got {getattr(self, name)}")
        if self.mem_gb is not None and self.mem_gb < 0:
            raise LaunchError(f"launcher: --mem-gb must not be negative, got {self.mem_gb}")
        if self.gpus_per_node and self.tasks_per_node != self.gpus_per_node:
            raise LaunchError(f"launcher: one task per GPU: --tasks-per-node {self.tasks_per_node} "
                              f"differs from --gpus-per-node {self.gpus_per_node}")
        if self.dependency and not dependency_ok(self.dependency):
            raise LaunchError(f"launcher: cannot parse --dependency {self.dependency!r} (e.g. afterok:1234)")
        if self.signal_delay_s >= self.time_min * 60:
            raise LaunchError(f"launcher: --signal-delay-s {self.signal_delay_s} is not shorter than the "
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


def _parse_extra(items: Sequence[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, val = str(item).partition("=")
        key = key.strip().lstrip("-")
        if not key:
            raise LaunchError(f"launcher: --sbatch {item!r} is not KEY=VALUE")
        out[key] = val if sep else True
    return out


# --- what the cluster offers -------------------------------------------------------------------

def _run_slurm(cmd: list[str]) -> str:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise LaunchError(f"launcher: `{' '.join(cmd)}` failed ({e})") from None
    if res.returncode != 0:
        msg = (res.stderr or res.stdout).strip().splitlines()
        # sbatch on PATH but no answering controller (a stopped test cluster, a broken login node):
        # the job is not silently run here instead, which on a login node would be wrong; say how.
        raise LaunchError(f"launcher: `{' '.join(cmd)}` failed: {msg[-1] if msg else f'exit {res.returncode}'} "
                          f"(SLURM's tools are on PATH but the cluster did not answer; --local runs the job "
                          f"on this machine)")
    return res.stdout


def _gres_gpus(gres: str) -> int:
    """GPUs per node in a ``sinfo %G`` field such as ``gpu:a100:8(S:0-1),shard:4``."""
    total = 0
    for item in gres.split(","):
        item = re.sub(r"\(.*?\)", "", item).strip()
        parts = item.split(":")
        if parts[0] == "gpu" and parts[-1].isdigit():
            total = max(total, int(parts[-1]))
    return total


def partitions() -> dict[str, dict[str, int]]:
    """Partitions of the cluster with the most CPUs and GPUs one node offers, from ``sinfo``."""
    out: dict[str, dict[str, int]] = {}
    default = None
    for line in _run_slurm(["sinfo", "-h", "-o", "%P|%c|%G"]).splitlines():
        if not line.strip():
            continue
        name, cpus, gres = (line.split("|") + ["", ""])[:3]
        if name.endswith("*"):
            name = name[:-1]
            default = name
        cpu = int(re.sub(r"\D", "", cpus) or 0)
        info = out.setdefault(name, {"cpus": 0, "gpus": 0, "default": 0})
        info["cpus"] = max(info["cpus"], cpu)
        info["gpus"] = max(info["gpus"], _gres_gpus(gres))
    if default:
        out[default]["default"] = 1
    return out


def check_cluster(spec: ClusterSpec) -> None:
    """Refuse, in one line, a request the cluster cannot run: unknown partition, no GPUs, too few CPUs."""
    parts = partitions()
    if not parts:
        raise LaunchError("launcher: sinfo lists no partitions")
    name = spec.partition
    if name is None:
        name = next((p for p, i in parts.items() if i["default"]), None)
        if name is None:
            raise LaunchError(f"launcher: the cluster has no default partition; pass --partition "
                              f"(one of: {', '.join(sorted(parts))})")
    if name not in parts:
        raise LaunchError(f"launcher: partition {name!r} does not exist (known: {', '.join(sorted(parts))})")
    info = parts[name]
    if spec.gpus_per_node > info["gpus"]:
        have = f"at most {info['gpus']} GPUs per node" if info["gpus"] else "no GPUs"
        raise LaunchError(f"launcher: partition {name!r} has {have}; asked for --gpus-per-node "
                          f"{spec.gpus_per_node} (use --gpus-per-node 0 for one CPU task per node)")
    need = spec.tasks_per_node * spec.cpus_per_task
    if info["cpus"] and need > info["cpus"]:
        raise LaunchError(f"launcher: partition {name!r} has at most {info['cpus']} CPUs per node; asked for "
                          f"{spec.tasks_per_node} task(s) x --cpus-per-task {spec.cpus_per_task} = {need}")


def use_slurm(args: argparse.Namespace) -> bool:
    if _opt(args, "local", False):
        return False
    if _opt(args, "slurm", False) and not slurm_available():
        raise LaunchError("launcher: --slurm given but there is no sbatch on PATH")
    # runfolder edit (item 10): a demo run (the entry script sets args.local_fallback) runs here
    # when SLURM's tools are installed but no controller answers; an explicit --slurm still errors.
    if slurm_available() and _opt(args, "local_fallback", False) and not _opt(args, "slurm", False):
        from maskalign.runfolder.slurm_env import controller_silence

        if not hasattr(args, "slurm_silence"):
            args.slurm_silence = controller_silence()
        if args.slurm_silence:
            return False
    return slurm_available()


# --- what runs inside the job ------------------------------------------------------------------

class JobTask:
    """What submitit runs on each SLURM task: the user's task, inside the job's environment.

    It exports torchrun's variables (rank, world size, master from the node list) for
    multi-process jobs, limits torch's threads to the task's CPUs, keeps the requeue signal from
    forked children (DataLoader workers inherit the main process's handler and would otherwise
    checkpoint and requeue too), logs where it runs, and delegates ``checkpoint`` to the task so
    that requeueing reruns the same task.
    """

    def __init__(self, task: Any, name: str) -> None:
        self.task, self.name = task, name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # Without CPU binding (task/none) torch would start one thread per core of the node in
        # every process; use the CPUs the task was given.
        cpus = os.environ.get("SLURM_CPUS_PER_TASK", "")
        if cpus.isdigit():
            os.environ.setdefault("OMP_NUM_THREADS", cpus)
            if "torch" in sys.modules:  # already imported (not by this package): tell it too
                sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
        from maskalign.distributed import export_torchrun_env

        pe = export_torchrun_env()
        _guard_requeue_signal()
        job = os.environ.get("SLURM_ARRAY_JOB_ID")
        job = f"{job}_{os.environ.get('SLURM_ARRAY_TASK_ID')}" if job else os.environ.get("SLURM_JOB_ID", "?")
        print(f"[launcher] {self.name}: SLURM job {job} (restart {os.environ.get('SLURM_RESTART_COUNT', '0')}), "
              f"task {pe.rank}/{pe.world_size} on {socket.gethostname()}, "
              f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '(unset)')}", flush=True)
        return self.task(*args, **kwargs)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        inner = getattr(self.task, "checkpoint", None)
        if inner is None:  # no resume support: run again from the start
            return submitit.helpers.DelayedSubmission(JobTask(self.task, self.name))
        delayed = inner(*args, **kwargs)
        if delayed is None:
            return None
        return submitit.helpers.DelayedSubmission(JobTask(delayed.function, self.name), *delayed.args,
                                                  **delayed.kwargs)

    def __repr__(self) -> str:
        return f"JobTask({self.name})"


def _guard_requeue_signal() -> None:
    import signal

    handler = signal.getsignal(signal.SIGUSR2)
    if not callable(handler):
        return
    owner = os.getpid()

    def only_in_main_process(signum: int, frame: Any) -> None:
        if os.getpid() == owner:
            handler(signum, frame)

    signal.signal(signal.SIGUSR2, only_in_main_process)


class Checkpointable:
    """Mixin for tasks that resume by themselves: requeueing reruns the very same task."""

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(self)


# --- submission ---------------------------------------------------------------------------------

_FRESH_SYS_PATH: list[str] | None = None


def _pickle_by_value_if_unimportable(task: Any) -> None:
    """A task class from a script folder (``pretrain/main.py`` imported as ``main``) cannot be
    imported inside the job, whose ``sys.path`` is a fresh interpreter's: pickle it by value."""
    global _FRESH_SYS_PATH
    mod_name = type(task).__module__
    mod = sys.modules.get(mod_name)
    if mod is None or mod_name == "__main__" or not getattr(mod, "__file__", None):
        return
    top = sys.modules.get(mod_name.split(".")[0])
    top_file = Path(getattr(top, "__file__", "") or mod.__file__).resolve()
    root = top_file.parent.parent if top_file.name == "__init__.py" else top_file.parent
    if _FRESH_SYS_PATH is None:
        out = subprocess.run([sys.executable, "-c", "import json, sys; print(json.dumps(sys.path))"],
                             capture_output=True, text=True, timeout=60, check=False)
        paths = json.loads(out.stdout) if out.returncode == 0 else []
        _FRESH_SYS_PATH = [str(Path(p or os.getcwd()).resolve()) for p in paths]
    if str(root) not in _FRESH_SYS_PATH:
        import cloudpickle

        cloudpickle.register_pickle_by_value(mod)


def _executor(folder: Path, params: dict[str, Any], max_requeues: int):
    import submitit

    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=max_requeues)
    executor.update_parameters(**params)
    return executor


def _submit(fn, what: str):
    import submitit

    try:
        return fn()
    except (submitit.core.utils.FailedJobError, submitit.core.utils.FailedSubmissionError,
            subprocess.CalledProcessError) as e:
        lines = [ln for ln in str(e).splitlines() if ln.strip()]
        detail = next((ln for ln in reversed(lines) if "error" in ln.lower()), lines[-1] if lines else repr(e))
        raise LaunchError(f"launcher: sbatch refused {what}: {detail.strip()}") from None


def sbatch_script(params: dict[str, Any], folder: Path, array_size: int | None = None) -> str:
    """The sbatch script submitit would submit for these parameters (for ``--dry-run``)."""
    from submitit.slurm.slurm import _make_sbatch_string

    command = f"{shlex.quote(sys.executable)} -u -m submitit.core._submit {shlex.quote(str(folder))}"
    return _make_sbatch_string(command=command, folder=folder, map_count=array_size, **params)


def _print_config(task: Any) -> None:
    """What a dry run shows of a task: its ``describe()``, or its resolved config ``cfg``."""
    if callable(getattr(task, "describe", None)):
        print(task.describe())
        return
    cfg = getattr(task, "cfg", None)
    if isinstance(cfg, dict):
        from omegaconf import OmegaConf

        print(OmegaConf.to_yaml(OmegaConf.create(cfg)).rstrip())


def _write_job_info(run_folder: Path, job_id: str, name: str, params: dict[str, Any], logs: Path) -> None:
    from maskalign.atomic import atomic_write_text

    run_folder.mkdir(parents=True, exist_ok=True)
    info = {"job_id": job_id, "name": name, "submitted": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "host": socket.gethostname(), "logs": str(logs.resolve()), "sbatch": params,
            "command": [sys.executable, *sys.argv], "cwd": os.getcwd()}
    atomic_write_text(run_folder / JOB_INFO, json.dumps(info, indent=2, default=str) + "\n")
    from maskalign.runfolder.history import record_event  # runfolder edit (item 9)

    record_event(run_folder, "submitted", job_id=str(job_id), name=name)


def read_job_info(run_folder: str | os.PathLike) -> dict[str, Any] | None:
    try:
        return json.loads((Path(run_folder) / JOB_INFO).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def launch(task: Any, args: argparse.Namespace, folder: str | os.PathLike, name: str, *,
           dependency: str | None = None) -> Any:
    """Submit ``task`` to SLURM, or run it here.

    Returns the submitit job on SLURM, the task's own result when it ran here, and ``None`` for a
    dry run. ``dependency`` (e.g. ``afterok:1234``) is added to ``--dependency``. Raises
    ``LaunchError`` (a ``UserError``) before anything is submitted when the request is wrong.
    """
    folder = Path(folder)
    return _launch([task], args, [folder], name, folder / "submitit" / "%j", dependency, array=False)[0]


def launch_array(tasks: Sequence[Any], args: argparse.Namespace, folders: Sequence[str | os.PathLike],
                 name: str, array_folder: str | os.PathLike, *, dependency: str | None = None) -> list[Any]:
    """Submit ``tasks`` as one SLURM job array (``folders[i]`` is task i's run folder), or run them here
    one after another. Returns the jobs, the results (an exception object for a run that failed),
    or ``[]`` for a dry run."""
    if len(tasks) != len(folders) or not tasks:
        raise ValueError("launch_array: one folder per task, and at least one task")
    return _launch(list(tasks), args, [Path(f) for f in folders], name, Path(array_folder) / "%j", dependency,
                   array=True)


def _launch(tasks: list[Any], args: argparse.Namespace, folders: list[Path], name: str, logs: Path,
            dependency: str | None, array: bool) -> list[Any]:
    spec = ClusterSpec.from_args(args)
    slurm = use_slurm(args)
    what = f"{name} ({len(tasks)} runs)" if array else name
    here = "on this machine, one after another" if array else "on this machine"
    if _opt(args, "dry_run", False):
        print(f"[launcher] dry run of {what}: nothing is submitted or run")
        for i, (task, folder) in enumerate(zip(tasks, folders)):
            print(f"[launcher] {f'run {i}: ' if array else ''}{folder}")
            _print_config(task)
        if not slurm:
            print(f"[launcher] would run {what} {here} ({_local_reason(args)})")
        else:
            check_cluster(spec)
            print(f"[launcher] would submit {what} to SLURM: {spec.describe()}\n"
                  f"{sbatch_script(spec.sbatch_params(name, dependency), logs, len(tasks) if array else None)}")
        return [] if array else [None]
    if not slurm:
        print(f"[launcher] {_local_reason(args)}: running {what} {here}", flush=True)
        if not array:
            return [tasks[0]()]
        results: list[Any] = []
        for i, (task, folder) in enumerate(zip(tasks, folders)):
            print(f"[launcher] run {i + 1}/{len(tasks)}: {folder}", flush=True)
            try:
                results.append(task())
            except Exception as e:  # noqa: BLE001 - one failed run does not stop the sweep, as in an array
                print(f"[launcher] run {folder.name} failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
                results.append(e)
        return results
    for task in tasks:  # runfolder edit (item 8): the job's own checks, before anything is queued
        if callable(getattr(task, "validate", None)):
            task.validate()
    check_cluster(spec)
    params = spec.sbatch_params(name, dependency)
    for task in tasks:
        _pickle_by_value_if_unimportable(task)
    executor = _executor(logs, params, spec.max_requeues)
    names = [f"{name}[{f.name}]" for f in folders] if array else [name]

    def submit_all() -> list[Any]:
        if not array:
            return [executor.submit(JobTask(tasks[0], name))]
        with executor.batch():
            pending = [executor.submit(JobTask(t, n)) for t, n in zip(tasks, names)]
        return pending

    jobs = _submit(submit_all, name)
    for job, folder, job_name in zip(jobs, folders, names):
        if array:  # the array's files live in one folder; each run folder links to its own
            link = folder / "submitit" / str(job.job_id)
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.is_symlink():
                link.symlink_to(job.paths.folder.resolve(), target_is_directory=True)
        _write_job_info(folder, job.job_id, job_name, params, job.paths.folder)
    if array:
        print(f"[launcher] submitted {name} as SLURM job array {jobs[0].job_id.split('_')[0]} of {len(jobs)} "
              f"({spec.describe()}):", flush=True)
        for job, folder in zip(jobs, folders):
            print(f"[launcher]   {job.job_id}: {folder}", flush=True)
    else:
        print(f"[launcher] submitted {name} as SLURM job {jobs[0].job_id} ({spec.describe()}); "
              f"outputs in {folders[0]}, logs in {jobs[0].paths.folder}", flush=True)
    return jobs


def _local_reason(args: argparse.Namespace) -> str:
    if _opt(args, "local", False):
        return "--local given"
    if _opt(args, "slurm_silence", None):  # runfolder edit (item 10)
        return f"SLURM's tools are on PATH but no controller answers ({args.slurm_silence}); this demo runs here"
    return "no SLURM here (no sbatch on PATH)"
