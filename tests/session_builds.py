"""The full demo world's costly builds, shared by every process of a test session.

The full world's teacher (minutes of CPU) and the demo encoder pre-trained under it (minutes more)
are what the slow tests stand on. Both are built once per session under a file lock, so pytest-xdist
workers share them (a session fixture is per process), and :func:`start_in_background` builds them
in a process of their own while the quick tests run: on 2 cores the tests keep one core, the builds
the other, and no worker sits waiting for a teacher nobody started.

Run as a script (``python tests/session_builds.py BASE SESSION_PID [teacher|encoder ...]``) it is that
background process.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path


def pretrain_cfg(output_dir: Path, *overrides: str):
    from maskalign.config import config_dir, load_config

    return load_config(None, [f"output_dir={output_dir}", *overrides], config_dir("pretrain"))


def built_once(base: Path, name: str, build: Callable[[Path], Path]) -> Path:
    """``build(base / name)``'s result path, built by whichever process takes the lock first.

    The others wait on the lock and read the path the builder wrote last (``NAME.path``, written
    atomically); a build that failed wrote nothing, so the next process to take the lock builds
    again and sees the error.
    """
    from maskalign.atomic import atomic_write_text

    folder, done = base / name, base / f"{name}.path"
    folder.mkdir(parents=True, exist_ok=True)
    with open(base / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.is_file():
            atomic_write_text(done, str(build(folder)))
    return Path(done.read_text())


def full_teacher() -> Path:
    """The full world's teacher (cached beside the world, ``$MASKALIGN_DEMO_ROOT``)."""
    from maskalign.teachers.demo_teacher import ensure_demo_teacher

    return ensure_demo_teacher()


def full_encoder(base: Path) -> Path:
    """The demo MaskAlign encoder of a user's first run: the default recipe on the full world."""
    from maskalign.engine.pretrain import train

    def build(out: Path) -> Path:
        return Path(train(pretrain_cfg(out, "name=session", "data.num_workers=0"))["encoder"])

    full_teacher()
    return built_once(base, "full_demo_encoder", build)


BUILDS = {"teacher": lambda base: full_teacher(), "encoder": full_encoder}


def start_in_background(base: Path, builds: list[str], session_pid: int) -> None:
    """Start ``builds`` (in order) in a process of their own, alive while ``session_pid`` is.

    Its log is ``base/session_builds.log``.
    """
    if not builds:
        return
    base.mkdir(parents=True, exist_ok=True)
    with open(base / "session_builds.log", "ab") as log:
        subprocess.Popen([sys.executable, str(Path(__file__).resolve()), str(base), str(session_pid), *builds],
                         stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def _exit_with(pid: int) -> None:
    """Leave as soon as process ``pid`` is gone (a thread polling it: nothing here blocks on the tests)."""
    def watch() -> None:
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os._exit(3)
            time.sleep(2)

    threading.Thread(target=watch, daemon=True).start()


def main(argv: list[str]) -> int:
    base, session_pid, builds = Path(argv[0]), int(argv[1]), argv[2:]
    _exit_with(session_pid)
    for name in builds:
        print(f"[session_builds] {name}: {BUILDS[name](base)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
