"""One machine-readable record per finished job, the raw material of the paper's tables.

Every job (pre-training, fine-tuning, linear probe, COCO, ADE20K, robustness, speed) writes
``record.json`` into its own output folder, atomically, so that ``results/make_tables.py`` can
gather them with a glob. A re-run of the same job overwrites its own record and nobody else's,
because the path is the job's folder. The schema is documented in ``results/SCHEMA.md``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import socket
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from maskalign.atomic import atomic_write_text
from maskalign.errors import DataError

SCHEMA_VERSION = "maskalign.record/1"
RECORD_FILENAME = "record.json"



@dataclass
class Record:
    """A finished job's result. Field meanings are in ``results/SCHEMA.md``."""

    run_id: str
    task: str
    method: str
    backbone: str
    supervision: str
    forward_ratio: float | None = None
    reconstruct_ratio: float | None = None
    pt_epochs: int | None = None
    paper_ref: dict[str, str] | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    checkpoint: dict[str, str] | None = None
    source_checkpoint: dict[str, str] | None = None
    config: dict[str, Any] = field(default_factory=dict)
    code_version: str = ""
    host: str = ""
    start_time: str = ""
    end_time: str = ""
    wall_time_s: float | None = None
    schema: str = SCHEMA_VERSION

    def __post_init__(self) -> None:
        # Any registered task may write records (maskalign.tasks.registry); a reader does not
        # need the task registered, only a well-formed name.
        if not isinstance(self.task, str) or not self.task.isidentifier():
            raise ValueError(f"record: task must be a task name, got {self.task!r}")
        # Checked on writing and on reading alike (results/SCHEMA.md): a table never shows a
        # string where a number belongs.
        problem = schema_problem(self)
        if problem:
            raise ValueError(f"record: {problem}")


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# field -> (check, what it must be); None is allowed wherever the default is None.
_FIELD_TYPES: dict[str, tuple[Any, str]] = {
    "run_id": (lambda v: isinstance(v, str), "a string"),
    "method": (lambda v: isinstance(v, str), "a string"),
    "backbone": (lambda v: isinstance(v, str), "a string"),
    "supervision": (lambda v: isinstance(v, str), "a string"),
    "forward_ratio": (lambda v: v is None or _number(v), "a number or null"),
    "reconstruct_ratio": (lambda v: v is None or _number(v), "a number or null"),
    "pt_epochs": (lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)), "an integer or null"),
    "paper_ref": (lambda v: v is None or isinstance(v, dict), "an object or null"),
    "metrics": (lambda v: isinstance(v, dict) and all(isinstance(k, str) and (x is None or _number(x))
                                                      for k, x in v.items()),
                "an object of numbers"),
    "checkpoint": (lambda v: v is None or isinstance(v, dict), "an object or null"),
    "source_checkpoint": (lambda v: v is None or isinstance(v, dict), "an object or null"),
    "config": (lambda v: isinstance(v, dict), "an object"),
    "code_version": (lambda v: isinstance(v, str), "a string"),
    "host": (lambda v: isinstance(v, str), "a string"),
    "start_time": (lambda v: isinstance(v, str), "a string"),
    "end_time": (lambda v: isinstance(v, str), "a string"),
    "wall_time_s": (lambda v: v is None or _number(v), "a number or null"),
}


def schema_problem(record: Record) -> str | None:
    """The first field whose value has the wrong type, as ``field=value is not ...``; else ``None``."""
    for name, (ok, what) in _FIELD_TYPES.items():
        value = getattr(record, name)
        if not ok(value):
            shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
            return f"{name}={shown} is not {what}"
    return None


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def code_version() -> str:
    """The git commit of the code that ran, with ``+dirty`` when the tree had local changes."""
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if not sha:
        return "unknown"
    return sha + ("+dirty" if dirty else "")


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def checkpoint_ref(path: str | os.PathLike) -> dict[str, str]:
    """How a record points at a checkpoint: its absolute path and content hash."""
    p = Path(path).resolve()
    return {"path": str(p), "sha256": file_sha256(p)}


def write_record(out_dir: str | os.PathLike, record: Record) -> Path:
    """Write ``record.json`` into ``out_dir`` atomically, filling host and code version if unset.

    Records are written by the job of a registered task (:class:`maskalign.tasks.job.TaskJob`) or
    by the speed benchmark; this module knows no task list, so it imports nothing of the tasks.
    """
    if not record.host:
        record.host = socket.gethostname()
    if not record.code_version:
        record.code_version = code_version()
    if not record.end_time:
        record.end_time = now_iso()
    path = Path(out_dir) / RECORD_FILENAME
    atomic_write_text(path, json.dumps(asdict(record), indent=2, sort_keys=True, default=str) + "\n")
    return path


def read_record(path: str | os.PathLike) -> Record:
    """The record in ``path``; a missing, unreadable or malformed file is one ``DataError`` line."""
    path = Path(path)
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as e:
        raise DataError(f"{path}: not a readable JSON record ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a readable JSON record (not UTF-8 at byte {e.start})") from None
    except ValueError as e:  # json.JSONDecodeError, and numbers Python cannot hold
        raise DataError(f"{path}: not a readable JSON record ({e})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA_VERSION:
        raise DataError(f"{path}: not a {SCHEMA_VERSION} record")
    try:
        return Record(**data)
    except (TypeError, ValueError) as e:
        raise DataError(f"{path}: malformed record ({e})") from None


def find_records(root: str | os.PathLike) -> list[Path]:
    """Every ``record.json`` under ``root``, following symlinked folders (run folders on another file
    system linked into the output root); a folder reached twice (a link cycle) is read once."""
    found, seen = [], set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        try:
            st = os.stat(folder)
        except OSError:
            dirs[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs.sort()
        if RECORD_FILENAME in files:
            found.append(Path(folder) / RECORD_FILENAME)
    return sorted(found)
