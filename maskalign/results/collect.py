"""Every ``record.json`` under an output root, as one pandas frame (one row per record).

A file that cannot be read (truncated, not JSON, another schema) is reported by name and skipped.
Besides the record's own fields each row says which encoder it measures (``source``: the sha256 of
the file the pre-trained encoder came from, or its hub name -- for robustness the fine-tune's
source, not the fine-tuned classifier), how a person names that encoder (``source_name``: the
file or hub name of an encoder not pre-trained here), its ``seed``, and ``config_key``: the config
without what may differ between seeds of one experiment (seed, name, output root, runtime).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from maskalign.records import DataError, find_records, read_record

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
    "source_name",
    "external",
    "pretraining",
    "seed",
    "config_key",
)

#: Config entries that do not make two runs different experiments (runs differing only here are seeds).
NOT_EXPERIMENT = ("seed", "name", "output_dir", "runtime", "logging", "ckpt", "encoder")


@dataclass
class Collected:
    frame: pd.DataFrame
    errors: list[str] = field(default_factory=list)


def _source_id(source: object) -> str:
    if isinstance(source, dict):
        return str(source.get("sha256") or source.get("hub") or source.get("path") or "")
    return ""


def _origin(config: dict[str, Any], source: object) -> dict[str, Any]:
    """The pre-trained encoder a record measures: the encoder entry's ``origin`` (robustness: the
    file the fine-tune started from), else its ``source``, else the record's source checkpoint."""
    enc = config.get("encoder") if isinstance(config.get("encoder"), dict) else {}
    for cand in (enc.get("origin"), enc.get("source"), source):
        if isinstance(cand, dict) and _source_id(cand):
            return cand
    return {}


def _source_name(origin: dict[str, Any]) -> str:
    if origin.get("hub"):
        return str(origin["hub"])
    return Path(str(origin.get("path") or "")).name


def config_key(config: dict[str, Any]) -> str:
    """The experiment a config describes: every entry but :data:`NOT_EXPERIMENT`, as sorted JSON."""
    kept = {k: v for k, v in config.items() if k not in NOT_EXPERIMENT}
    data = kept.get("data")
    if isinstance(data, dict):
        kept["data"] = {k: v for k, v in data.items() if k != "num_workers"}
    return json.dumps(kept, sort_keys=True, default=str)


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
        except DataError as e:
            errors.append(f"skipped corrupt record {e}")
            continue
        ref = r.paper_ref if isinstance(r.paper_ref, dict) else {}
        config = dict(r.config or {})
        origin = _origin(config, r.source_checkpoint)
        enc = config.get("encoder") if isinstance(config.get("encoder"), dict) else {}
        seed = config.get("seed")
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
                "config": config,
                "source": _source_id(origin),
                "source_name": _source_name(origin),
                "external": bool(enc.get("external") or str(r.method).startswith("external:")),
                "pretraining": enc.get("pretraining") or None,
                "seed": int(seed) if isinstance(seed, int | float) and not isinstance(seed, bool) else None,
                "config_key": config_key(config),
            }
        )
    frame = pd.DataFrame(rows, columns=[c for c in COLUMNS if c != "end_ts"])
    frame["end_ts"] = pd.to_datetime(frame["end_time"], utc=True, errors="coerce", format="ISO8601")
    return Collected(frame=frame[list(COLUMNS)], errors=errors)
