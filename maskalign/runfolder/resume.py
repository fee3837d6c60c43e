"""A pre-training run folder across starts: finished-run check, lock, restart, resume checks, history.

What happens, in order, before the engine builds anything:

1. ``finished_summary``: a run whose ``record.json`` is there and whose checkpoint is complete for
   this config is left alone: nothing is written, the caller prints where the results are.
2. ``open_run`` (main process): take the folder's lock (``run.lock``), remove temp files of killed
   writes, set the previous outputs aside on ``runtime.restart=true`` (renamed
   ``replaced-<time>.<name>``, never deleted; nothing needs to be readable for that), read the newest
   readable checkpoint (an unreadable newer one is kept aside as ``unreadable-<time>.<name>``, with a
   note) and refuse one written under another config, *then* write ``config.yaml``, and append
   ``started`` to ``status.jsonl``.
3. ``RunFolder.log_history``: ``log.jsonl`` is rewritten from the checkpoint's own list of epoch
   log entries, so a crash between checkpoint and log line loses no line and a crash after a log
   line but before its checkpoint leaves no line of an epoch that will be run again.

A checkpoint records the SLURM job that wrote it, so a requeued start of a ``runtime.restart=true``
job resumes its own progress instead of restarting again.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from maskalign.atomic import atomic_write_text, remove_stale_temps
from maskalign.checkpoint import CHECKPOINT, CheckpointError, latest_checkpoint, load_file
from maskalign.config import flat_keys, save_config, to_plain
from maskalign.records import RECORD_FILENAME, DataError, read_record
from maskalign.runfolder.history import record_event
from maskalign.runfolder.lock import RunLock
from maskalign.runfolder.slurm_env import current_job_id

# Keys that may differ between the starts of one run: where things are, how often to log or save,
# how many loader processes (keyed augmentation makes the batches independent of it), where images
# are decoded, the device, how far to go (max_steps, a smoke-test knob) and what is logged where.
RESUMABLE_KEYS = ("name", "output_dir", "data.root", "data.num_workers", "data.decode", "runtime.device",
                  "runtime.save_every", "runtime.keep_every", "runtime.log_every", "runtime.max_steps",
                  "runtime.restart", "logging")
# The run's outputs, set aside together on an explicit restart.
OUTPUTS = ("record.json", "log.jsonl", "config.yaml", "checkpoint.pth", "encoder.pth", "encoder.json",
           "pretrain_model.pth")


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(key, old value, new value)`` for every setting that changes the run's results."""
    a, b = flat_keys(old), flat_keys(new)
    keys = sorted(set(a) | set(b))
    return [(k, a.get(k), b.get(k)) for k in keys
            if a.get(k) != b.get(k) and not any(k == r or k.startswith(r + ".") for r in RESUMABLE_KEYS)]


def check_same_config(where: Path, old: dict[str, Any], cfg: Any) -> None:
    diffs = config_differences(old, to_plain(cfg))
    if diffs:
        shown = "; ".join(f"{k}={o!r} there, {n!r} now" for k, o, n in diffs[:3])
        more = f" (+{len(diffs) - 3} more)" if len(diffs) > 3 else ""
        raise CheckpointError(f"{where}: does not fit this config ({shown}{more}); resume with the run's own "
                              f"config.yaml, or start over with runtime.restart=true (the old outputs are kept aside)")


def complete(ckpt: dict[str, Any], cfg: Any) -> bool:
    """Whether a checkpoint ends the run ``cfg`` asks for (all epochs, or ``max_steps`` reached)."""
    if int(ckpt.get("iter_in_epoch", 0)):
        return False
    max_steps = cfg.runtime.max_steps
    return int(ckpt["epoch"]) >= int(cfg.optim.epochs) or (max_steps is not None and int(ckpt["step"]) >= max_steps)


def _checkpoints_newest_first(out: Path) -> list[Path]:
    numbered = sorted(((int(m.group(1)), p) for p in out.glob("checkpoint-*.pth")
                       if (m := re.fullmatch(r"checkpoint-(\d+)\.pth", p.name))), reverse=True)
    first = [out / CHECKPOINT] if (out / CHECKPOINT).is_file() else []
    return first + [p for _, p in numbered]


def newest_readable(out: Path, notes: list[str]) -> tuple[Path | None, dict[str, Any] | None]:
    """The newest checkpoint that loads, and its contents; ``(None, None)`` when there is none.

    An unreadable newer one (truncated, foreign) is renamed ``unreadable-<time>.<name>`` (kept, out of
    every glob that reads checkpoints) with a note; when none is readable, one line says so.
    """
    candidates = _checkpoints_newest_first(out)
    failures: list[tuple[Path, str]] = []
    for path in candidates:
        try:
            ckpt = load_file(path)
        except CheckpointError as e:
            failures.append((path, str(e)))
            continue
        if not isinstance(ckpt, dict) or not {"model", "epoch", "step"} <= set(ckpt):
            failures.append((path, f"{path}: not a pre-training checkpoint of this project"))
            continue
        stamp = time.strftime("%Y%m%dT%H%M%S")
        for bad, why in failures:
            aside = bad.with_name(f"unreadable-{stamp}.{bad.name}")
            os.replace(bad, aside)
            notes.append(f"{why}; kept as {aside.name}, resuming from the newest readable checkpoint, {path.name}")
        return path, ckpt
    if failures:
        raise CheckpointError(f"{failures[0][1]}; no readable checkpoint in {out}: start over with "
                              f"runtime.restart=true (the old outputs are kept aside)")
    return None, None


def finished_summary(cfg: Any, out: Path) -> dict[str, Any] | None:
    """The summary of a finished run of exactly this config, read without writing anything; else ``None``."""
    if getattr(cfg.runtime, "restart", False) or not (out / RECORD_FILENAME).is_file():
        return None
    try:
        record = asdict(read_record(out / RECORD_FILENAME))
    except DataError:
        return None  # not a record this run can stand behind: the run goes on and writes a good one
    ckpt_path = latest_checkpoint(out)
    if ckpt_path is not None:
        try:
            ckpt = load_file(ckpt_path)
        except CheckpointError:
            return None  # open_run falls back to a readable one, or says that none is
        check_same_config(ckpt_path, ckpt.get("config") or {}, cfg)
        if not complete(ckpt, cfg):
            return None
    else:  # the checkpoint was deleted to save space: the record's config says what ran
        check_same_config(out / RECORD_FILENAME, record.get("config") or {}, cfg)
    enc = out / "encoder.pth"
    return {"out_dir": str(out), "final_loss": (record.get("metrics") or {}).get("final_loss"),
            "epochs_done": record.get("pt_epochs"), "encoder": str(enc), "already_finished": True,
            "record": str(out / RECORD_FILENAME)}


def set_aside(out: Path) -> list[Path]:
    """Rename the run's outputs to ``replaced-<time>.<name>`` (out of every glob that reads them)."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    names = [*OUTPUTS, *(p.name for p in out.glob("checkpoint-*.pth"))]
    moved = []
    for name in names:
        p = out / name
        if p.is_file():
            target = out / f"replaced-{stamp}.{name}"
            os.replace(p, target)
            moved.append(target)
    return moved


@dataclass
class RunFolder:
    """One start of a pre-training run in its folder (main process: holds the lock)."""

    out: Path
    is_main: bool
    lock: RunLock | None = None
    ckpt_path: Path | None = None
    ckpt: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def log_history(self, history: list[dict[str, Any]]) -> None:
        """Make ``log.jsonl`` hold exactly the checkpoint's epoch entries."""
        if self.is_main:
            text = "".join(json.dumps(e) + "\n" for e in history)
            path = self.out / "log.jsonl"
            if not path.is_file() or path.read_text() != text:
                atomic_write_text(path, text)

    def event(self, event: str, **fields: Any) -> None:
        if self.is_main:
            record_event(self.out, event, **fields)

    def close(self) -> None:
        if self.lock is not None:
            self.lock.release()


def open_run(cfg: Any, out: Path, is_main: bool) -> RunFolder:
    """Lock, clean, restart or check, then write ``config.yaml`` (main process; others only wait)."""
    run = RunFolder(out, is_main)
    if not is_main:
        return run
    run.lock = RunLock(out).acquire()
    try:
        if run.lock.note:
            run.notes.append(run.lock.note)
        if removed := remove_stale_temps(out):
            run.notes.append(f"removed {len(removed)} temporary file(s) of an interrupted write")
        if getattr(cfg.runtime, "restart", False):
            # Nothing needs to be readable: only a requeued start of the same SLURM job reads the
            # newest checkpoint, to resume its own progress instead of restarting again.
            job = current_job_id()
            ckpt_path, ckpt = None, None
            if job is not None and latest_checkpoint(out) is not None:
                try:
                    ckpt_path = latest_checkpoint(out)
                    ckpt = load_file(ckpt_path)
                except CheckpointError:
                    ckpt_path, ckpt = None, None
            own = isinstance(ckpt, dict) and ckpt.get("owner_job") == job
            if not own:
                ckpt_path = ckpt = None
                if moved := set_aside(out):
                    run.notes.append(f"runtime.restart=true: kept the previous outputs aside as "
                                     f"{moved[0].name.split('.', 1)[0]}.* ({len(moved)} files)")
        else:
            ckpt_path, ckpt = newest_readable(out, run.notes)
        if ckpt is not None:
            check_same_config(ckpt_path, ckpt.get("config") or {}, cfg)
        run.ckpt_path, run.ckpt = ckpt_path, ckpt
        save_config(cfg, out / "config.yaml")
        pos = ({"epoch": int(ckpt["epoch"]), "iteration": int(ckpt.get("iter_in_epoch", 0))}
               if ckpt is not None else None)
        run.event("started", resumed_from=pos)
    except BaseException:
        run.close()
        raise
    return run
