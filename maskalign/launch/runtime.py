"""What runs inside a job: the task wrapper, torchrun's variables, the requeue signal, ``Checkpointable``.

Requeue contract: SLURM signals USR2 ``--signal-delay-s`` seconds before the time limit (and a
preemption can be delivered the same way); submitit then calls ``task.checkpoint()`` in the
main process, which returns the task to run again, requeues the job (same job id, so
dependencies keep waiting) and exits. The task resumes from the newest complete checkpoint in its
run folder. A job requeued by SLURM itself (``scontrol requeue``, preemption by SIGTERM) reruns
the same task, which resumes the same way. Every task of the suite is ``Checkpointable``.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any


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
        guard_requeue_signal()
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


def guard_requeue_signal() -> None:
    """Let only this process act on SIGUSR2: forked children inherit the handler but must not requeue."""
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
