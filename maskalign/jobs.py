"""Where every job stands, read from the jobs' own files; no SLURM accounting (slurmdbd) needed.

    python -m maskalign.jobs status OUTPUT [--json] [--no-slurm]
    python -m maskalign.jobs wait JOB_ID [JOB_ID ...] [--timeout SECONDS]

A run folder ``OUTPUT/<kind>/<run>/`` is

* ``pending``/``running``/... while ``squeue`` knows its job (``job.json`` names it; the reason,
  e.g. ``Dependency``, is shown); ``requeued`` when it is pending again after it had started;
* ``running`` while the process named in its ``run.lock`` is alive (a ``--local`` run too);
* ``done`` when it holds ``record.json`` (the metrics are shown); ``bad record`` when that file is
  unreadable or breaks the schema (named on stderr; ``--strict`` exits 1);
* ``failed`` when its submitit log ends in an exception or its ``status.jsonl`` says so (the
  last line is shown), or SLURM reports FAILED/CANCELLED/TIMEOUT/...;
* ``cancelled``/``timeout``/... also after SLURM has forgotten the job: the status command notes
  what SLURM reported in ``status.jsonl`` (see :mod:`maskalign.runfolder.history`);
* ``completed`` when its job ended well but wrote no record (a task that writes none);
* ``stopped`` when it has progress (``log.jsonl``, a checkpoint) but no process is alive;
* ``started``/``unknown`` when SLURM cannot be asked (no ``squeue``): what its history says;
* ``lost`` when a job was submitted that SLURM no longer knows and left no trace.

Progress is ``epochs done/epochs`` from ``log.jsonl`` and the run's ``config.yaml``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from maskalign.config import default_output_root
from maskalign.errors import UserError
from maskalign.launch import read_job_info
from maskalign.records import RECORD_FILENAME, DataError, read_record
from maskalign.runfolder.history import read_events, record_event
from maskalign.runfolder.lock import read_holder

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE",
            "PREEMPTED", "SPECIAL_EXIT", "REVOKED"}
RUN_MARKERS = ("record.json", "job.json", "config.yaml", "log.jsonl", "checkpoint.pth", "submitit", "status.jsonl",
               "run.lock")


# --- SLURM, through squeue only ----------------------------------------------------------------

def slurm_jobs() -> dict[str, tuple[str, str]] | None:
    """``{job id: (state, reason)}`` for every job the controller still holds; ``None`` without SLURM."""
    if shutil.which("squeue") is None:
        return None
    try:
        res = subprocess.run(["squeue", "-h", "-r", "--states=all", "-o", "%i|%T|%r"], capture_output=True,
                             text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if res.returncode != 0:
        return None
    out = {}
    for line in res.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3:
            out[parts[0]] = (parts[1], parts[2])
    return out


def job_state(job_id: str) -> tuple[str, str] | None:
    """``(state, reason)`` of one job, or ``None`` when SLURM no longer (or never) knew it."""
    jobs = slurm_jobs()
    return None if jobs is None else jobs.get(str(job_id))


def wait(job_ids: list[str], timeout: float = 600, poll: float = 1.0,
         until: set[str] | None = None) -> dict[str, str]:
    """Wait until every job reaches a terminal state (or one of ``until``); returns the states.

    A job the controller has forgotten counts as ``GONE``. Raises ``TimeoutError`` naming the jobs
    still waiting.
    """
    goal = until or TERMINAL
    t_end = time.time() + timeout
    states: dict[str, str] = {}
    while True:
        jobs = slurm_jobs() or {}
        for j in job_ids:
            states[str(j)] = jobs.get(str(j), ("GONE", ""))[0]
        waiting = [j for j, s in states.items() if s not in goal and s != "GONE"]
        if not waiting:
            return states
        if time.time() > t_end:
            raise TimeoutError(f"jobs still not done after {timeout:.0f}s: "
                               + ", ".join(f"{j} {states[j]}" for j in waiting))
        time.sleep(poll)


# --- a run folder's own files ------------------------------------------------------------------

@dataclass
class RunStatus:
    kind: str
    run: str
    state: str
    progress: str = ""
    job_id: str = ""
    detail: str = ""
    folder: str = ""


def _epochs_total(folder: Path) -> int | None:
    cfg = folder / "config.yaml"
    if not cfg.is_file():
        return None
    m = re.search(r"^optim:\s*\n(?:[ \t]+.*\n)*?[ \t]+epochs:\s*(\d+)", cfg.read_text(), re.MULTILINE)
    if m is None:
        m = re.search(r"^epochs:\s*(\d+)", cfg.read_text(), re.MULTILINE)
    return int(m.group(1)) if m else None


def progress(folder: Path) -> str:
    """``done/total`` epochs from ``log.jsonl`` (one line per finished epoch) and ``config.yaml``."""
    log = folder / "log.jsonl"
    done = None
    if log.is_file():
        epochs = []
        for line in log.read_text().splitlines():
            try:
                epochs.append(int(json.loads(line).get("epoch", -1)))
            except (ValueError, AttributeError):
                continue
        done = max(epochs) + 1 if epochs else 0
    total = _epochs_total(folder)
    if done is None:
        return "" if total is None else f"0/{total}"
    return f"{done}/{total}" if total else f"{done} epochs"


def _log_dirs(folder: Path, job_id: str | None) -> list[Path]:
    sub = folder / "submitit"
    if not sub.is_dir():
        return []
    dirs = [d for d in sub.iterdir() if d.is_dir()]
    if job_id:
        mine = [d for d in dirs if d.name == str(job_id)]
        if mine:
            return mine
    return sorted(dirs, key=lambda d: d.stat().st_mtime, reverse=True)[:1]


def log_verdict(folder: Path, job_id: str | None = None) -> tuple[str, str] | None:
    """What the newest submitit logs say: ``("failed", last error line)``, ``("requeued", ...)``,
    ``("completed", "")`` or ``None`` when there is nothing to read. Any process failing fails the job."""
    for d in _log_dirs(folder, job_id):
        verdict = None
        for err in sorted(d.glob("*_log.err")):
            lines = [ln for ln in err.read_text(errors="replace").splitlines() if ln.strip()]

            def last(*needles: str, lines: list[str] = lines) -> int:
                return max((i for i, ln in enumerate(lines) if any(n in ln for n in needles)), default=-1)

            failed = max(last("triggered an exception", "Job not requeued because"),
                         max((i for i, ln in enumerate(lines) if ln.startswith("Traceback")), default=-1))
            completed, requeued = last("Job completed successfully"), last("Requeued job")
            if failed > max(completed, requeued):
                errors = [ln for ln in lines[failed:] if re.match(r"^[A-Za-z_.]+(Error|Exception|Exit)\b", ln)
                          or "Job not requeued because" in ln]
                return "failed", (errors[-1] if errors else lines[-1]).strip()[:300]
            if requeued > completed:
                verdict = ("requeued", lines[requeued].split(" - ", 1)[-1].strip())
            elif completed >= 0 and verdict is None:
                verdict = ("completed", "")
        if verdict:
            return verdict
    return None


def _record_detail(folder: Path) -> tuple[str, str]:
    """(state, detail) of a folder holding ``record.json``: ``done`` with its metrics, or ``bad record``."""
    try:
        metrics = read_record(folder / RECORD_FILENAME).metrics
    except DataError as e:
        return "bad record", str(e)
    shown = [f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, (int, float))][:3]
    return "done", ", ".join(shown)


def _remember(folder: Path, job_id: str, state: str, reason: str, events: list[dict]) -> None:
    """Note a job end SLURM reports in ``status.jsonl`` (once), for when SLURM has forgotten it."""
    if any(e.get("event") == "slurm" and e.get("job_id") == job_id and e.get("state") == state for e in events):
        return
    try:
        record_event(folder, "slurm", job_id=job_id, state=state, reason=reason)
    except UserError:  # someone else's read-only run folder: report, do not remember
        pass


def run_status(folder: Path, slurm: dict[str, tuple[str, str]] | None = None) -> RunStatus:
    folder = Path(folder)
    info = read_job_info(folder) or {}
    job_id = str(info.get("job_id") or "")
    st = RunStatus(kind=folder.parent.name, run=folder.name, state="", progress=progress(folder), job_id=job_id,
                   folder=str(folder))
    events = read_events(folder)
    mine = [e for e in events if str(e.get("job_id") or "") == job_id] if job_id else events
    last = mine[-1] if mine else {}
    live = slurm.get(job_id) if (slurm is not None and job_id) else None
    reason = "" if not live or live[1] in ("None", "") else live[1]
    if live and live[0] not in TERMINAL:
        st.state, st.detail = live[0].lower(), reason
        if live[0] == "PENDING" and any(e.get("event") in ("started", "stopped") for e in mine):
            st.state = "requeued"  # SLURM shows a requeued job as pending (BeginTime) again
            stops = [e for e in mine if e.get("event") == "stopped"]
            st.detail = "; ".join(x for x in (reason, stops[-1].get("detail", "") if stops else "") if x)
        return st
    holder = read_holder(folder)
    if holder is not None and holder.alive():
        st.state, st.detail = "running", f"written by {holder.describe()}"
        return st
    record = folder / RECORD_FILENAME
    submitted_after_record = record.is_file() and (folder / "job.json").is_file() \
        and (folder / "job.json").stat().st_mtime > record.stat().st_mtime
    if record.is_file() and not (submitted_after_record and live and live[0] != "COMPLETED"):
        st.state, st.detail = _record_detail(folder)
        return st
    verdict = log_verdict(folder, job_id or None)
    failure = verdict[1] if verdict and verdict[0] == "failed" else ""
    if not failure and last.get("event") == "failed":
        failure = str(last.get("error", ""))
    if live and live[0] != "COMPLETED":  # cancelled, timeout, failed, ... as SLURM still remembers it
        _remember(folder, job_id, live[0], reason, events)
        st.state = live[0].lower()
        st.detail = failure or reason
        return st
    if failure:
        st.state, st.detail = "failed", failure
        return st
    ended = [e for e in mine if e.get("event") == "slurm"]
    if ended and ended[-1].get("state") != "COMPLETED" and last.get("event") in ("slurm", "submitted"):
        st.state, st.detail = str(ended[-1]["state"]).lower(), str(ended[-1].get("reason", ""))
        return st
    if (live and live[0] == "COMPLETED") or (verdict and verdict[0] == "completed"):
        st.state, st.detail = "completed", f"finished without {RECORD_FILENAME}"
        return st
    if last.get("event") == "stopped":
        st.state, st.detail = "stopped", f"{last.get('signal', '')}: {last.get('detail', '')}; resubmit to resume"
    elif (folder / "log.jsonl").is_file() or any(folder.glob("checkpoint*.pth")):
        st.state, st.detail = "stopped", "no job is running; resubmit to resume"
    elif job_id and slurm is None:
        if last.get("event") == "started":
            st.state = "started"
            st.detail = f"started on {last.get('host')} at {last.get('time')}; cannot ask SLURM from here"
        else:
            st.state = "unknown"
            st.detail = f"submitted as SLURM job {job_id}; cannot ask SLURM from here (no squeue)"
    elif job_id:
        st.state = "lost"
        st.detail = ("started, then ended without a trace (killed?)" if last.get("event") == "started"
                     else "SLURM no longer knows the job and it left no output")
    else:
        st.state = "not started"
    return st


def find_runs(output_root: Path) -> list[Path]:
    """Run folders ``OUTPUT/<kind>/<run>/`` (anything holding a record, job, config, log or checkpoint)."""
    runs = []
    if not output_root.is_dir():
        return runs
    for kind in sorted(p for p in output_root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
        for run in sorted(p for p in kind.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
            if any((run / m).exists() for m in RUN_MARKERS):
                runs.append(run)
    return runs


def collect(output_root: str | Path, use_slurm: bool = True) -> list[RunStatus]:
    slurm = slurm_jobs() if use_slurm else None
    return [run_status(r, slurm) for r in find_runs(Path(output_root))]


def format_table(rows: list[RunStatus]) -> str:
    if not rows:
        return "no runs found"
    head = ("KIND", "RUN", "STATE", "PROGRESS", "JOB", "DETAIL")
    data = [(r.kind, r.run, r.state, r.progress, r.job_id, r.detail) for r in rows]
    widths = [max(len(str(x[i])) for x in [head, *data]) for i in range(5)]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(row[:5], widths)) + "  " + str(row[5]) for row in [head, *data]]
    return "\n".join(ln.rstrip() for ln in lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m maskalign.jobs", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("status", help="one line per run folder under OUTPUT")
    s.add_argument("output", nargs="?", default=default_output_root(),
                   help="the output root (default: $MASKALIGN_OUTPUT, else output)")
    s.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    s.add_argument("--no-slurm", action="store_true", help="do not ask squeue; files only")
    s.add_argument("--strict", action="store_true", help="exit 1 when a record.json is unreadable or malformed")
    w = sub.add_parser("wait", help="wait until SLURM jobs end; exit 1 unless all COMPLETED")
    w.add_argument("job_ids", nargs="+")
    w.add_argument("--timeout", type=float, default=3600)
    args = p.parse_args(argv)
    if args.cmd == "status":
        root = Path(args.output)
        if not root.is_dir():
            print(f"error: output folder {root} does not exist", file=sys.stderr)
            return 2
        rows = collect(root, use_slurm=not args.no_slurm)
        if args.json:
            for r in rows:
                print(json.dumps(asdict(r)))
        else:
            print(format_table(rows))
        bad = [r for r in rows if r.state == "bad record"]
        for r in bad:
            print(f"skipped bad record {r.detail}", file=sys.stderr)
        return 1 if args.strict and bad else 0
    try:
        states = wait(args.job_ids, timeout=args.timeout)
    except TimeoutError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for j, s in states.items():
        print(f"{j} {s}")
    return 0 if all(s == "COMPLETED" for s in states.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
