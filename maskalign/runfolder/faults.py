"""Named fault-injection points, so that tests of stops and failures never race a subprocess.

A test that must hit a running job at a given step (a second writer while the first runs, a signal
in the middle of an epoch, a diverging loss) cannot rely on timing: on an idle machine the job ends
first, on a loaded one the signal lands an epoch late. Instead it names the step and what happens
there, through the environment of the job it starts:

* ``MASKALIGN_FAULT_AT=E:I`` -- the point: epoch ``E`` (0-based), after ``I`` iterations of it;
  or ``start``: when the job starts, before the teacher, the data set (a demo world) and the loop;
* ``MASKALIGN_FAULT=ACTION`` -- what happens there, in the process of rank ``MASKALIGN_FAULT_RANK``
  (default 0; ``RANK`` of a distributed run):

  - ``hold``: write the file ``MASKALIGN_FAULT_READY`` names (if any), then wait until a stop is
    requested (a signal arrives); bounded by ``MASKALIGN_FAULT_TIMEOUT`` seconds (default 600), so
    a test that never signals cannot hang the job;
  - ``USR2``, ``TERM``, ``INT``: the process sends itself that signal, as SLURM would;
  - ``nan``: the loss of the iteration that follows (iteration ``I`` of epoch ``E``, 0-based) is
    made non-finite, as a diverging run's would be (on every rank).

Several points at once: comma-separated lists of the same length (``0:3,0:3`` with ``USR2,nan``).
Nothing happens when the variables are unset (one dictionary look-up per iteration).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from maskalign.config import ConfigError
from maskalign.distributed import process_env
from maskalign.runfolder.preempt import stop_requested

ENV_AT, ENV_ACTION, ENV_READY, ENV_TIMEOUT = ("MASKALIGN_FAULT_AT", "MASKALIGN_FAULT", "MASKALIGN_FAULT_READY",
                                              "MASKALIGN_FAULT_TIMEOUT")
ENV_RANK = "MASKALIGN_FAULT_RANK"
ACTIONS = ("hold", "USR2", "TERM", "INT", "nan")
START = (-1, -1)  # MASKALIGN_FAULT_AT=start


def _points() -> list[tuple[int, int, str]]:
    at, action = os.environ.get(ENV_AT), os.environ.get(ENV_ACTION)
    if not at or not action:
        return []
    ats, actions = at.split(","), action.split(",")
    if len(ats) != len(actions):
        raise ConfigError(f"{ENV_AT}={at!r} and {ENV_ACTION}={action!r}: give as many points as actions")
    points = []
    for a, act in zip(ats, actions):
        if act not in ACTIONS:
            raise ConfigError(f"{ENV_ACTION}={action!r}: expected one of {', '.join(ACTIONS)}")
        if a == "start":
            points.append((*START, act))
            continue
        try:
            epoch, it = (int(x) for x in a.split(":"))
        except ValueError:
            raise ConfigError(f"{ENV_AT}={at!r}: expected EPOCH:ITERATION (e.g. 1:3) or start") from None
        points.append((epoch, it, act))
    return points


def poisoned(epoch: int, iteration: int) -> bool:
    """Whether the loss of ``iteration`` (0-based) of ``epoch`` is to be made non-finite (``nan``)."""
    return (epoch, iteration, "nan") in _points()


def fault_at_start() -> None:
    """Called once when a job starts, before anything is built."""
    fault_point(*START)


def fault_point(epoch: int, iteration: int) -> None:
    """Called by the training loop at each iteration boundary (``iteration`` done in ``epoch``)."""
    if os.environ.get(ENV_RANK, "0") != str(process_env().rank):
        return
    for e, i, action in _points():
        if (e, i) == (epoch, iteration) and action != "nan":
            _act(action)


def _act(action: str) -> None:
    if action != "hold":
        os.kill(os.getpid(), getattr(signal, f"SIG{action}"))
        return
    ready = os.environ.get(ENV_READY)
    if ready:
        Path(ready).write_text(f"{os.getpid()}\n")
    deadline = time.monotonic() + float(os.environ.get(ENV_TIMEOUT, "600"))
    while stop_requested() is None and time.monotonic() < deadline:
        time.sleep(0.02)
