"""Atomic file writes: a reader (or a crash) never sees half a checkpoint or record.

Write to a temporary file ``.<name>.<random>.tmp`` in the same directory, flush and fsync, then
``os.replace`` it over the target; the rename is atomic on POSIX file systems, so the old file
survives any failure. The file gets the mode any other file of the process would get (``0666``
less the umask; ``mkstemp`` alone gives ``0600``, which hides results from the group on a shared
cluster). A file-system failure (read-only folder, no space, permission denied, a file where the
folder should be) is a ``PathError`` naming the target and the cause, never a traceback; temporary
files a killed writer left behind are removed by ``remove_stale_temps`` once the folder's writer
holds its lock.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from maskalign.errors import PathError

_TEMP = re.compile(r"^\..+\.[A-Za-z0-9_]+\.tmp$")


def current_umask() -> int:
    """The process umask, read without changing it where Linux shows it (``/proc/self/status``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)  # elsewhere the only way to read it is to set it (and put it back)
    os.umask(old)
    return old


class _Recording:
    """A file wrapper that remembers the ``OSError`` of a failed write: torch's zip writer turns
    ENOSPC into ``RuntimeError: ... unexpected pos``, and the cause must survive that."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f, self.error = f, None

    def write(self, data: Any) -> int:
        try:
            return self._f.write(data)
        except OSError as e:
            self.error = e
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


def make_dirs(folder: str | os.PathLike) -> Path:
    """``mkdir -p``, with a failure as one ``PathError`` line (a file in the way named as such)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        in_way = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), folder)
        raise PathError(f"cannot create folder {folder}: {in_way} is a file, not a folder") from None
    except NotADirectoryError:
        in_way = next((p for p in folder.parents if p.exists() and not p.is_dir()), folder.parent)
        raise PathError(f"cannot create folder {folder}: {in_way} is a file, not a folder") from None
    except OSError as e:
        raise PathError.from_os_error(e, folder, "create folder") from None
    return folder


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(f)`` on a temporary binary file, then move it over ``path``."""
    path = Path(path)
    tmp = None
    rec = None
    try:
        make_dirs(path.parent)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            rec = _Recording(f)
            write(rec)  # type: ignore[arg-type]
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except PathError:
        raise
    except BaseException as e:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        cause = e if isinstance(e, OSError) else (rec.error if rec is not None else None)
        if cause is not None:
            raise PathError.from_os_error(cause, path) from None
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode()))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f))


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append one line to a log (``log.jsonl``, ``status.jsonl``); a failure is a ``PathError``."""
    try:
        with open(path, "a") as f:
            f.write(line.rstrip("\n") + "\n")
    except OSError as e:
        raise PathError.from_os_error(e, path) from None


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files of writes that were killed in ``folder``; returns them.

    Only the folder's single writer may call this (another writer's temp file may be in flight).
    """
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        if _TEMP.match(p.name) and p.is_file():
            try:
                p.unlink()
                removed.append(p)
            except OSError:
                pass
    return removed
