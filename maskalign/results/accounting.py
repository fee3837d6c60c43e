"""What ``make_tables`` did with every record: which table rows it went into, and why the rest did not.

A researcher reading a table needs to know that nothing was dropped silently: every record read is
either behind a cell of some table (``grouped``) or named with the reason it is not (``left_out``):
a pre-training record (its transfers are the rows), a re-run or another config of an experiment a
table shows newer, or a task no table shows.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pandas as pd

from maskalign.results.fmt import MISSING
from maskalign.results.tables import TableResult

_WHY_NOT_BY_TASK = {
    "pretrain": "a pre-training record: its encoder's transfers make the rows",
}


@dataclass
class Accounting:
    grouped: list[str] = field(default_factory=list)  # "table1: 3 rows from 5 records"
    left_out: list[str] = field(default_factory=list)  # "<record>: <why>"


def account(records: pd.DataFrame, results: list[TableResult]) -> Accounting:
    """Which records each table used, and every record no table used, with the reason."""
    out = Accounting()
    used: set[str] = set()
    why: dict[str, str] = {}
    for result in results:
        frame = result.frame
        n_rows = int(((frame.get("Source", "ours") != "paper") & (frame["Run"] != MISSING)).sum()) if len(frame) else 0
        if result.used:
            out.grouped.append(f"{result.spec.name}: {n_rows} rows of ours from {len(result.used)} records")
        used |= result.used
        for path, reason in result.set_aside.items():
            why.setdefault(path, reason)
    tasks = Counter()
    for rec in records.itertuples():
        if rec.path in used:
            continue
        tasks[rec.task] += 1
        reason = why.get(rec.path) or _WHY_NOT_BY_TASK.get(rec.task) or f"no table shows {rec.task} records"
        out.left_out.append(f"{rec.path}: {reason}")
    return out
