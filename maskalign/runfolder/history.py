"""``status.jsonl``: what happened to a run folder, one JSON line per event, append-only.

Written by the submitting process (``submitted``), by the job itself (``started``, ``stopped``
with the signal and the checkpoint position, ``finished``, ``failed`` with its one-line error) and
by ``python -m maskalign.jobs status`` when it sees SLURM end a job that could not say so itself
(``slurm``: a dependent cancelled before it started, a job killed by the time limit). SLURM forgets
ended jobs after a few minutes; this file does not, so the status command stays truthful.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from maskalign.atomic import append_line
from maskalign.runfolder.slurm_env import current_job_id, restart_count

STATUS_FILE = "status.jsonl"
EVENTS = ("submitted", "started", "stopped", "finished", "failed", "slurm")


def record_event(folder: str | os.PathLike, event: str, job_id: str | None = None, **fields: Any) -> dict[str, Any]:
    """Append ``event`` (one of ``EVENTS``) with the time, host, pid and SLURM job; returns the entry."""
    if event not in EVENTS:
        raise ValueError(f"unknown run event {event!r}")
    entry: dict[str, Any] = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "event": event,
                             "job_id": job_id if job_id is not None else current_job_id(),
                             "host": socket.gethostname(), "pid": os.getpid()}
    if event == "started":
        entry["restart"] = restart_count()
    entry.update(fields)
    append_line(Path(folder) / STATUS_FILE, json.dumps(entry, default=str))
    return entry


def read_events(folder: str | os.PathLike) -> list[dict[str, Any]]:
    """Every readable event, oldest first (a line cut short by a crash is skipped)."""
    try:
        text = (Path(folder) / STATUS_FILE).read_text(errors="replace")
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and "event" in entry:
            out.append(entry)
    return out
