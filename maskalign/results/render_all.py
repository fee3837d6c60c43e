"""Records in, every table (and optionally the figures) out: what ``results/make_tables.py`` runs."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from maskalign.config import default_output_root
from maskalign.results import DEFAULT_REFERENCE_DIR
from maskalign.results.accounting import account
from maskalign.results.collect import collect_records
from maskalign.results.reference import load_reference
from maskalign.results.render import write_table
from maskalign.results.tables import TableResult, build_all


@dataclass
class Summary:
    written: list[Path] = field(default_factory=list)
    tables: dict[str, TableResult] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # one line per incomplete table
    notes: list[str] = field(default_factory=list)  # re-runs set aside, records lacking a metric
    errors: list[str] = field(default_factory=list)  # unreadable record files, one line each
    n_records: int = 0
    grouped: list[str] = field(default_factory=list)  # per table: how many rows from how many records
    left_out: list[str] = field(default_factory=list)  # every record behind no cell, with why
    out: Path | None = None


def make_tables(
    root: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    reference_dir: str | os.PathLike = DEFAULT_REFERENCE_DIR,
    latex: bool = False,
    figures: bool = False,
) -> Summary:
    """Read every record under ``root`` (default: the output root), write every table to ``out``
    (default: ``<root>/tables``)."""
    root = default_output_root() if root is None else root
    out = Path(root) / "tables" if out is None else Path(out)
    ref = load_reference(reference_dir)
    got = collect_records(root)
    summary = Summary(errors=list(got.errors), n_records=len(got.frame), out=out)
    results = build_all(ref, got.frame)
    accounted = account(got.frame, results)
    summary.grouped, summary.left_out = accounted.grouped, accounted.left_out
    for result in results:
        name = result.spec.name
        summary.tables[name] = result
        summary.written += write_table(result.frame, out, name, result.spec.title, latex)
        if line := result.missing_line():
            summary.missing.append(line)
        summary.notes += result.notes
    if figures:
        from maskalign.results.figures import plot_mask_ratio

        summary.written.append(
            plot_mask_ratio(ref, summary.tables["table4"], Path(out) / "fig_mask_ratio.png")
        )
    return summary
