"""Every ``record.json`` under an output root, as one pandas frame (one row per record).

A file that cannot be read (truncated, not JSON, another schema) is reported by name and skipped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from maskalign.records import RecordError, find_records, read_record

COLUMNS = (
    "path",
    "run_id",
    "task",
    "method",
    "backbone",
    "supervision",
    "forward_ratio",
    "reconstruct_ratio",
    "pt_epochs",
    "ref_table",
    "ref_row",
    "end_time",
    "end_ts",
    "metrics",
    "config",
    "source",
)


@dataclass
class Collected:
    frame: pd.DataFrame
    errors: list[str] = field(default_factory=list)


def _source_id(source: object) -> str:
    if isinstance(source, dict):
        return str(source.get("sha256") or source.get("path") or "")
    return ""


def collect_records(root: str | os.PathLike) -> Collected:
    """Read all records under ``root``; unreadable ones go to ``errors`` (one line each)."""
    rows, errors = [], []
    if Path(root).is_dir():
        paths = find_records(root)
    else:
        paths = []
        errors.append(f"{root}: output root does not exist (no records)")
    for path in paths:
        try:
            r = read_record(path)
        except RecordError as e:
            errors.append(f"skipped corrupt record {e}")
            continue
        ref = r.paper_ref if isinstance(r.paper_ref, dict) else {}
        rows.append(
            {
                "path": str(path),
                "run_id": r.run_id,
                "task": r.task,
                "method": r.method,
                "backbone": r.backbone,
                "supervision": r.supervision,
                "forward_ratio": r.forward_ratio,
                "reconstruct_ratio": r.reconstruct_ratio,
                "pt_epochs": r.pt_epochs,
                "ref_table": str(ref["table"]) if ref.get("table") not in (None, "") else None,
                "ref_row": str(ref["row"]) if ref.get("row") not in (None, "") else None,
                "end_time": r.end_time,
                "metrics": dict(r.metrics or {}),
                "config": dict(r.config or {}),
                "source": _source_id(r.source_checkpoint),
            }
        )
    frame = pd.DataFrame(rows, columns=[c for c in COLUMNS if c != "end_ts"])
    frame["end_ts"] = pd.to_datetime(frame["end_time"], utc=True, errors="coerce", format="ISO8601")
    return Collected(frame=frame[list(COLUMNS)], errors=errors)
