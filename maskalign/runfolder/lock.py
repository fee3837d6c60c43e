"""``run.lock``: one writer per run folder.

The lock is a small JSON file in the run folder naming its holder (host, pid and the pid's start
time, SLURM job id with array task, start time, command). It is taken before anything is written
and removed at exit. A second writer is refused in one line naming the holder. A lock whose holder
is gone is taken over, with a note:

* same host: the pid no longer exists, or belongs to another process (its start time differs);
* another host: its SLURM job is no longer running according to ``squeue``;
* a requeued SLURM job is the same owner as its earlier start (the same job id): it takes over.

A lock on another host without a SLURM job cannot be checked from here and is refused; the message
says which file to delete once that process is known to be gone. The decision and the take-over
happen under an ``flock`` of the lock file, so two processes starting at once cannot both win.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from maskalign.atomic import make_dirs
from maskalign.errors import PathError, RunFolderError
from maskalign.runfolder.slurm_env import ALIVE_STATES, current_job_id, job_state

LOCK_FILE = "run.lock"


def _pid_start(pid: int) -> str | None:
    """The start time of ``pid`` in clock ticks since boot (``/proc/<pid>/stat`` field 22)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def _pid_alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    now = _pid_start(pid)
    return start is None or now is None or now == start


@dataclass
class Holder:
    """Who holds (or wants) a run folder."""

    host: str
    pid: int
    pid_start: str | None = None
    job_id: str | None = None
    started: str = ""
    command: list[str] = field(default_factory=list)

    @classmethod
    def me(cls) -> Holder:
        return cls(host=socket.gethostname(), pid=os.getpid(), pid_start=_pid_start(os.getpid()),
                   job_id=current_job_id(), started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                   command=[sys.executable, *sys.argv])

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Holder:
        return cls(host=str(d.get("host", "?")), pid=int(d.get("pid", -1)), pid_start=d.get("pid_start"),
                   job_id=d.get("job_id"), started=str(d.get("started", "")), command=list(d.get("command") or []))

    def describe(self) -> str:
        job = f" (SLURM job {self.job_id})" if self.job_id else ""
        return f"pid {self.pid} on {self.host}{job}, since {self.started or '?'}"

    def same_process(self, other: Holder) -> bool:
        return (self.host, self.pid, self.pid_start) == (other.host, other.pid, other.pid_start)

    def earlier_start_of(self, other: Holder) -> bool:
        """Whether this holder is an earlier start of ``other``'s SLURM job (requeued since): same
        job id, and not a process still alive beside ``other`` in the same allocation."""
        if not (self.job_id and self.job_id == other.job_id):
            return False
        return not (self.host == other.host and _pid_alive(self.pid, self.pid_start))

    def alive(self) -> bool | None:
        """Whether the holder may still be writing: ``None`` when that cannot be told from here."""
        if self.host == socket.gethostname():
            if not _pid_alive(self.pid, self.pid_start):
                return False
            if self.job_id:  # a live pid of a job SLURM has ended is a reused pid number
                state = job_state(self.job_id)
                return state is None or state in ALIVE_STATES
            return True
        if self.job_id:
            state = job_state(self.job_id)
            return None if state is None else state in ALIVE_STATES
        return None


def read_holder(folder: str | os.PathLike) -> Holder | None:
    """The holder named in ``folder/run.lock``, or ``None`` when the folder is not locked."""
    try:
        text = (Path(folder) / LOCK_FILE).read_text()
        return Holder.from_dict(json.loads(text)) if text.strip() else None
    except (OSError, ValueError, TypeError):
        return None


class RunLock:
    """The lock of one run folder, held by this process from ``acquire()`` to ``release()`` (or exit)."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.me = Holder.me()
        self.held = False
        self.note = ""

    def acquire(self) -> RunLock:
        """Take the lock; raises ``RunFolderError`` naming a live holder, ``PathError`` when the
        folder cannot be written. ``note`` says whose stale lock was taken over, if any."""
        make_dirs(self.folder)
        for _ in range(50):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as e:
                raise PathError.from_os_error(e, self.path) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    same_file = os.fstat(fd).st_ino == os.stat(self.path).st_ino
                except FileNotFoundError:
                    same_file = False
                if not same_file:  # released (unlinked) while we waited: look again
                    continue
                self._take(fd)
                self.held = True
                atexit.register(self.release)
                return self
            finally:
                os.close(fd)
        raise RunFolderError(f"{self.path}: could not be taken (it changes hands constantly)")

    def _take(self, fd: int) -> None:
        text = os.pread(fd, 1 << 16, 0).decode(errors="replace")
        old = None
        if text.strip():
            try:
                old = Holder.from_dict(json.loads(text))
            except (ValueError, TypeError):
                old = None  # half written by a killed process: nobody holds it
        if old is not None and not old.same_process(self.me) and not old.earlier_start_of(self.me):
            alive = old.alive()
            if alive is None:
                raise RunFolderError(f"{self.folder} is being written by {old.describe()} (cannot check that "
                                     f"host from here; delete {self.path} once that process is gone)")
            if alive:
                raise RunFolderError(f"{self.folder} is being written by {old.describe()}; wait for it to "
                                     f"end{' or scancel ' + old.job_id if old.job_id else ''}")
            self.note = f"took over the stale lock of {old.describe()} (no longer running)"
        elif old is not None and old.earlier_start_of(self.me):
            self.note = f"took over the lock of an earlier start of SLURM job {old.job_id} (requeued)"
        data = (json.dumps(asdict(self.me), indent=1) + "\n").encode()
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
            os.fsync(fd)
        except OSError as e:
            raise PathError.from_os_error(e, self.path) from None

    def release(self) -> None:
        """Remove the lock if it is still this process's (idempotent)."""
        if not self.held:
            return
        self.held = False
        try:
            fd = os.open(self.path, os.O_RDWR)
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            holder = read_holder(self.folder)
            if holder is not None and (holder.host, holder.pid) == (self.me.host, self.me.pid):
                os.unlink(self.path)
        except OSError:
            pass
        finally:
            os.close(fd)

    def __enter__(self) -> RunLock:  # noqa: PYI034 (Self needs 3.11 typing; RunLock is final)
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def take_folder(folder: str | os.PathLike) -> RunLock:
    """Create ``folder``, take its lock until exit and remove temp files of killed writes: what a job
    does first (file-system failures and a live other writer are one-line ``UserError``s)."""
    from maskalign.atomic import remove_stale_temps

    lock = RunLock(folder).acquire()
    if lock.note:
        print(f"[run] {lock.note}", flush=True)
    remove_stale_temps(folder)
    return lock
