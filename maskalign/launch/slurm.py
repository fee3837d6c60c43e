"""SLURM through submitit: what the cluster offers (``sinfo``), submission, dry-run scripts, ``job.json``.

Each run folder gets ``job.json`` (job id, parameters, command) when its job is submitted;
submitit's own files (submission script, pickles, ``<id>_<task>_log.{out,err}``) go to
``<run folder>/submitit/<job id>/``, or, for the tasks of a job array, to
``<output>/<kind>/_arrays/<array name>/<job id>/``, linked from each run's ``submitit/``.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from maskalign.launch.flags import ClusterSpec, ConfigError, opt

ARRAYS_DIR = "_arrays"
JOB_INFO = "job.json"


def slurm_available() -> bool:
    """Whether ``sbatch`` is on ``PATH`` (the controller may still not answer: see ``partitions``)."""
    return shutil.which("sbatch") is not None


def _run_slurm(cmd: list[str]) -> str:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ConfigError(f"launcher: `{' '.join(cmd)}` failed ({e})") from None
    if res.returncode != 0:
        msg = (res.stderr or res.stdout).strip().splitlines()
        # sbatch on PATH but no answering controller (a stopped test cluster, a broken login node):
        # the job is not silently run here instead, which on a login node would be wrong; say how.
        raise ConfigError(f"launcher: `{' '.join(cmd)}` failed: {msg[-1] if msg else f'exit {res.returncode}'} "
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
        raise ConfigError("launcher: sinfo lists no partitions")
    name = spec.partition
    if name is None:
        name = next((p for p, i in parts.items() if i["default"]), None)
        if name is None:
            raise ConfigError(f"launcher: the cluster has no default partition; pass --partition "
                              f"(one of: {', '.join(sorted(parts))})")
    if name not in parts:
        raise ConfigError(f"launcher: partition {name!r} does not exist (known: {', '.join(sorted(parts))})")
    info = parts[name]
    if spec.gpus_per_node > info["gpus"]:
        have = f"at most {info['gpus']} GPUs per node" if info["gpus"] else "no GPUs"
        raise ConfigError(f"launcher: partition {name!r} has {have}; asked for --gpus-per-node "
                          f"{spec.gpus_per_node} (use --gpus-per-node 0 for one CPU task per node)")
    need = spec.tasks_per_node * spec.cpus_per_task
    if info["cpus"] and need > info["cpus"]:
        raise ConfigError(f"launcher: partition {name!r} has at most {info['cpus']} CPUs per node; asked for "
                          f"{spec.tasks_per_node} task(s) x --cpus-per-task {spec.cpus_per_task} = {need}")


def launched_by_torchrun() -> bool:
    """Whether this process is one rank of a world torchrun started (its variables are set)."""
    return bool(os.environ.get("TORCHELASTIC_RUN_ID")) or ("RANK" in os.environ and "WORLD_SIZE" in os.environ
                                                            and "LOCAL_RANK" in os.environ)


def use_slurm(args: argparse.Namespace) -> bool:
    """Whether to submit: SLURM is present and ``--local`` was not given (``--slurm`` insists on it).
    A process of a world torchrun launched runs here: it is already one rank of a job."""
    if opt(args, "local", False) or launched_by_torchrun():
        return False
    if opt(args, "slurm", False) and not slurm_available():
        raise ConfigError("launcher: --slurm given but there is no sbatch on PATH")
    # A demo run (the entry script sets args.local_fallback) runs here when SLURM's tools are
    # installed but no controller answers; an explicit --slurm still errors.
    if slurm_available() and opt(args, "local_fallback", False) and not opt(args, "slurm", False):
        from maskalign.runfolder.slurm_env import controller_silence

        if not hasattr(args, "slurm_silence"):  # probe the controller once per command
            args.slurm_silence = controller_silence()
        if args.slurm_silence:
            return False
    return slurm_available()


def executor(folder: Path, params: dict[str, Any], max_requeues: int) -> Any:
    """submitit's executor writing its files to ``folder``, with the job's sbatch parameters."""
    import submitit

    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=max_requeues)
    executor.update_parameters(**params)
    return executor


def submit(fn: Callable[[], Any], what: str) -> Any:
    """Call ``fn`` (which submits); an sbatch refusal becomes one ``ConfigError`` line naming ``what``."""
    import submitit

    try:
        return fn()
    except (submitit.core.utils.FailedJobError, submitit.core.utils.FailedSubmissionError,
            subprocess.CalledProcessError) as e:
        lines = [ln for ln in str(e).splitlines() if ln.strip()]
        detail = next((ln for ln in reversed(lines) if "error" in ln.lower()), lines[-1] if lines else repr(e))
        raise ConfigError(f"launcher: sbatch refused {what}: {detail.strip()}") from None


def sbatch_script(params: dict[str, Any], folder: Path, array_size: int | None = None) -> str:
    """The sbatch script submitit would submit for these parameters (for ``--dry-run``)."""
    from submitit.slurm.slurm import _make_sbatch_string

    command = f"{shlex.quote(sys.executable)} -u -m submitit.core._submit {shlex.quote(str(folder))}"
    return _make_sbatch_string(command=command, folder=folder, map_count=array_size, **params)


def print_config(task: Any) -> None:
    """What a dry run shows of a task: its ``describe()`` (the spec and the resolved config)."""
    if callable(getattr(task, "describe", None)):
        print(task.describe())


def write_job_info(run_folder: Path, job_id: str, name: str, params: dict[str, Any], logs: Path) -> None:
    """Write ``job.json`` into the run folder: job id, name, parameters, command line, where the logs are."""
    from maskalign.atomic import atomic_write_text

    run_folder.mkdir(parents=True, exist_ok=True)
    info = {"job_id": job_id, "name": name, "submitted": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "host": socket.gethostname(), "logs": str(logs.resolve()), "sbatch": params,
            "command": [sys.executable, *sys.argv], "cwd": os.getcwd()}
    atomic_write_text(run_folder / JOB_INFO, json.dumps(info, indent=2, default=str) + "\n")
    from maskalign.runfolder.history import record_event

    record_event(run_folder, "submitted", job_id=str(job_id), name=name)


def read_job_info(run_folder: str | os.PathLike) -> dict[str, Any] | None:
    """The run folder's ``job.json``, or ``None`` when there is none (or it does not parse)."""
    try:
        return json.loads((Path(run_folder) / JOB_INFO).read_text())
    except (OSError, json.JSONDecodeError):
        return None
