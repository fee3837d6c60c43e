"""Preemption: a signal only sets a stop flag; the training loop checkpoints, then requeues or exits.

SLURM announces the end of a job's time (``--signal USR2@delay``, submitit's requeue signal) and a
requeue or cancellation (SIGTERM, then SIGKILL after the cluster's ``KillWait``). Checkpointing from
inside a signal handler, as submitit's own handler does, interrupts the training step at an
arbitrary bytecode and lets the DataLoader workers die in mid-batch. Instead:

* ``install_handler()`` (called when a pre-training job starts) replaces the USR2, TERM and INT
  handlers of the main process, and keeps the previous ones (submitit's). Outside the step loop
  (building the data set, the teacher, the demo world; exporting at the end) TERM and INT end the
  process at once: the handler raises ``Stopped`` (exit status 128 + signal), so ``finally``
  blocks release the run folder's lock. Between ``enter_step_loop()`` and ``leave_step_loop()`` a signal only records
  itself; USR2 always only records itself. A second signal always ends the process at once;
* a child process never acts on these handlers: a ``fork`` hook puts the default actions of TERM
  and INT back in every forked child (a DataLoader worker, a ``multiprocessing`` worker), so a
  child ends on TERM as it would without this module, and a pool's ``terminate()`` ends its
  workers. USR2 is ignored in a child from its first instruction: SLURM sends it to every process
  of the job, and its default action would kill a DataLoader worker that has not yet reached
  ``quiet_worker`` (a signal that lands as an epoch starts), failing the job instead of requeueing it;
* the loop calls ``stop_requested()`` at every iteration boundary, writes a mid-epoch checkpoint
  and then calls ``stop_now()``: after USR2 inside a submitit job it runs submitit's own handler,
  which pickles the task again, requeues the job (same id) and exits; otherwise (TERM, or a run
  on this machine) it raises ``Stopped``, a ``SystemExit`` with status 128 + signal, so the
  DataLoader iterator is shut down normally on the way out and no traceback is printed;
* ``quiet_worker`` (the DataLoader's ``worker_init_fn``) makes workers ignore both signals: only the
  main process decides, and it shuts them down. When it cannot (the loop raised, and the iterator
  that owns them is held by the traceback), ``multiprocessing`` would end its daemonic children
  at exit with TERM and wait for them forever: the job would hold its node until its time limit.
  So the main process kills what is left of them at exit (``_end_quiet_workers``).
"""

from __future__ import annotations

import atexit
import multiprocessing
import multiprocessing.util  # its exit hook is registered at import: ours must come later, to run first
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

SIGNALS = (signal.SIGUSR2, signal.SIGTERM, signal.SIGINT)
_state: dict[str, Any] = {"signal": None, "owner": None, "saved": {}, "in_loop": False}


class Stopped(SystemExit):
    """Raised after the checkpoint of a stop request (exit status 128 + the signal's number), or by
    the handler itself when a signal ends the process at once (``immediate``: nothing was written)."""

    def __init__(self, signum: int, message: str, immediate: bool = False) -> None:
        super().__init__(128 + signum)
        self.signum, self.message, self.immediate = signum, message, immediate


def _on_signal(signum: int, frame: Any) -> None:
    if os.getpid() != _state["owner"]:  # a child forked before the at-fork hook could run: act as if uncaught
        if signum == signal.SIGUSR2:  # ... except for the job's warning, which only the main process heeds
            return
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    name = signal.Signals(signum).name
    if _state["signal"] is not None:
        raise Stopped(signum, f"stopped by a second signal ({name}); the last checkpoint is kept", immediate=True)
    if not _state["in_loop"] and signum != signal.SIGUSR2:
        raise Stopped(signum, f"stopped by {name} before or after the training steps; "
                              "the last checkpoint is kept", immediate=True)
    _state["signal"] = signum


def _reset_in_child() -> None:
    """After ``fork``: the child gets the operating system's default actions, none of the job's
    handlers (neither this module's nor submitit's, which would requeue the job from a child)."""
    if _state["owner"] is None or _state["owner"] == os.getpid():
        return
    saved, _state["saved"] = _state["saved"], {}
    _state.update(signal=None, owner=None, in_loop=False)
    for s in saved:
        try:
            signal.signal(s, signal.SIG_IGN if s == signal.SIGUSR2 else signal.SIG_DFL)
        except (ValueError, OSError):
            pass


os.register_at_fork(after_in_child=_reset_in_child)


def _end_quiet_workers() -> None:
    """At exit of the process that installed the handler: SIGKILL the daemonic children still
    alive. They are DataLoader workers left behind by a loop that raised; they ignore TERM
    (``quiet_worker``), so ``multiprocessing``'s own exit hook, which runs after this one,
    would wait for them forever. After a normal end their iterator has joined them already."""
    if os.getpid() != _state["owner"]:
        return
    left = [child for child in multiprocessing.active_children() if child.daemon]
    if not left:
        return
    # torch's SIGCHLD handler raises when one of its workers dies; at exit, nobody is listening.
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for child in left:
        child.kill()
    for child in left:
        child.join(timeout=30)


def enter_step_loop() -> None:
    """From here on TERM and INT only set the stop flag (the loop checkpoints at the next boundary)."""
    _state["in_loop"] = True


def leave_step_loop() -> None:
    """From here on TERM and INT end the process at once again."""
    _state["in_loop"] = False


def install_handler() -> Callable[[], None]:
    """Catch USR2 and TERM in this (main) process; returns a function that puts the old handlers back.

    Off the main thread (where signals cannot be caught) it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    _state.update(signal=None, owner=os.getpid(), in_loop=False, saved={s: signal.getsignal(s) for s in SIGNALS})
    for s in SIGNALS:
        signal.signal(s, _on_signal)
    atexit.unregister(_end_quiet_workers)  # once, however many runs this process starts
    atexit.register(_end_quiet_workers)
    return restore


def restore() -> None:
    """Put back the handlers ``install_handler`` replaced (idempotent)."""
    saved, _state["saved"] = _state["saved"], {}
    _state["in_loop"] = False
    for s, handler in saved.items():
        try:
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        except (ValueError, TypeError):
            pass


def stop_requested() -> int | None:
    """The signal that asked this process to stop, or ``None``."""
    return _state["signal"]


def request_stop(signum: int = signal.SIGUSR2) -> None:
    """Ask for a stop as a signal would (for callers that know of a preemption by other means)."""
    _state["signal"] = signum


def stop_now(message: str) -> None:
    """After the checkpoint: requeue through submitit (USR2 in a submitit job), else exit.

    Never returns: submitit's handler exits the process after requeueing; otherwise ``Stopped``.
    """
    signum = _state["signal"] or signal.SIGTERM
    previous = _state["saved"].get(signum)
    restore()
    if signum == signal.SIGUSR2 and callable(previous):
        # The requeue makes SLURM send TERM to every process of the job, ``scontrol requeue`` itself
        # included if it has not exited yet: killed, it failed the requeue that had just worked. An
        # ignored signal stays ignored across exec, so the child ignores it too; this process is
        # leaving anyway (SIGKILL still follows after the cluster's KillWait).
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        previous(signum, None)  # submitit: checkpoint() -> pickle the task, scontrol requeue, sys.exit
    raise Stopped(signum, message)


def quiet_worker(worker_id: int) -> None:
    """``worker_init_fn`` of the training DataLoader: workers leave stop signals to the main process
    (which shuts them down; SIGKILL and the DataLoader's own watchdog still end them)."""
    for s in SIGNALS:
        signal.signal(s, signal.SIG_IGN)
