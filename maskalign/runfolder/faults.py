"""Named fault-injection points, so that tests of stops and failures never race a subprocess.

A test that must hit a running job at a given step (a second writer while the first runs, a signal
in the middle of an epoch, a diverging loss) cannot rely on timing: on an idle machine the job ends
first, on a loaded one the signal lands an epoch late. Instead it names the step and what happens
there, through the environment of the job it starts:

* ``MASKALIGN_FAULT_AT=E:I`` -- the point: epoch ``E`` (0-based), after ``I`` iterations of it;
* ``MASKALIGN_FAULT=ACTION`` -- what happens there, in the main process:

  - ``hold``: write the file ``MASKALIGN_FAULT_READY`` names (if any), then wait until a stop is
    requested (a signal arrives); bounded by ``MASKALIGN_FAULT_TIMEOUT`` seconds (default 600), so
    a test that never signals cannot hang the job;
  - ``USR2``, ``TERM``, ``INT``: the process sends itself that signal, as SLURM would.

Nothing happens when the variables are unset (one dictionary look-up per iteration).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from maskalign.config import ConfigError
from maskalign.runfolder.preempt import stop_requested

ENV_AT, ENV_ACTION, ENV_READY, ENV_TIMEOUT = ("MASKALIGN_FAULT_AT", "MASKALIGN_FAULT", "MASKALIGN_FAULT_READY",
                                              "MASKALIGN_FAULT_TIMEOUT")
ACTIONS = ("hold", "USR2", "TERM", "INT")


def _point() -> tuple[int, int, str] | None:
    at, action = os.environ.get(ENV_AT), os.environ.get(ENV_ACTION)
    if not at or not action:
        return None
    try:
        epoch, it = (int(x) for x in at.split(":"))
    except ValueError:
        raise ConfigError(f"{ENV_AT}={at!r}: expected EPOCH:ITERATION, e.g. 1:3") from None
    if action not in ACTIONS:
        raise ConfigError(f"{ENV_ACTION}={action!r}: expected one of {', '.join(ACTIONS)}")
    return epoch, it, action


def fault_point(epoch: int, iteration: int) -> None:
    """Called by the training loop at each iteration boundary (``iteration`` done in ``epoch``)."""
    point = _point()
    if point is None or point[:2] != (epoch, iteration):
        return
    action = point[2]
    if action != "hold":
        os.kill(os.getpid(), getattr(signal, f"SIG{action}"))
        return
    ready = os.environ.get(ENV_READY)
    if ready:
        Path(ready).write_text(f"{os.getpid()}\n")
    deadline = time.monotonic() + float(os.environ.get(ENV_TIMEOUT, "600"))
    while stop_requested() is None and time.monotonic() < deadline:
        time.sleep(0.02)
