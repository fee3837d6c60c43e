"""Who this process is to SLURM, and whether a job is still alive, from the environment and squeue.

Kept apart from the launcher so that the run-folder lock and the status command can ask it
without importing submitit.
"""

from __future__ import annotations

import os
import shutil
import subprocess

# Job states in which a job's processes may still be writing its run folder.
ALIVE_STATES = {"RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED", "STOPPED", "RESIZING", "SIGNALING",
                "STAGE_OUT", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED"}


def current_job_id(env: dict[str, str] | None = None) -> str | None:
    """``<job>`` or ``<array job>_<task>`` of the SLURM job this process runs in, else ``None``."""
    env = os.environ if env is None else env
    array = env.get("SLURM_ARRAY_JOB_ID")
    if array and env.get("SLURM_ARRAY_TASK_ID") is not None:
        return f"{array}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID") or None


def restart_count(env: dict[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    text = env.get("SLURM_RESTART_COUNT", "0")
    return int(text) if text.isdigit() else 0


def job_state(job_id: str) -> str | None:
    """SLURM's state of one job (``RUNNING``, ``PENDING``, ...); ``""`` when the controller answers
    but no longer knows the job; ``None`` when SLURM cannot be asked."""
    if shutil.which("squeue") is None:
        return None
    try:
        res = subprocess.run(["squeue", "-h", "-j", str(job_id), "--states=all", "-o", "%T"],
                             capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if res.returncode != 0:
        # squeue refuses a job id it has forgotten ("Invalid job id specified"): a clear answer.
        return "" if "invalid job id" in (res.stderr or "").lower() else None
    lines = [ln.strip() for ln in res.stdout.splitlines() if ln.strip()]
    return lines[0] if lines else ""


def controller_silence(timeout_s: float = 15) -> str | None:
    """Why the SLURM controller does not answer (``sinfo`` fails or hangs), or ``None`` when it does."""
    try:
        res = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=timeout_s,
                             check=False)
    except subprocess.TimeoutExpired:
        return f"sinfo did not answer within {timeout_s:.0f}s"
    except OSError as e:
        return f"sinfo: {e}"
    if res.returncode != 0:
        lines = (res.stderr or res.stdout).strip().splitlines()
        return lines[-1] if lines else f"sinfo exited with {res.returncode}"
    return None
