"""The paper's numbers, typed from its text, one CSV per table in ``results/paper_reference/``.

Each file has three bookkeeping columns and then the paper's own columns, cells as the paper
prints them ("30%", "85.4", "2.8×", "-"):

* ``key``: the row key. A pre-training config tagged ``paper_ref = {"table": "3", "row":
  "dynamic-top5"}`` fills row ``dynamic-top5`` of Table 3 (see ``results/SCHEMA.md``);
* ``ours``: 1 when the suite reproduces the row (a missing run is then reported), else 0;
* ``same_as``: space-separated ``table:key`` rows that are the same pre-training setting, so one
  run fills all of them (e.g. Table 3 ``dynamic-top5`` is Table 4 ``attentive-70``).

Lines starting with ``#`` are comments.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from maskalign.results.fmt import parse_cell

META_COLUMNS = ("key", "ours", "same_as")

Ref = tuple[str, str]  # (table, row key)


@dataclass
class Reference:
    """The loaded reference tables and the equivalence groups of their rows."""

    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    _parent: dict[Ref, Ref] = field(default_factory=dict)

    # --- lookup -------------------------------------------------------------------------------
    def has(self, table: str) -> bool:
        return table in self.tables

    def keys(self, table: str) -> list[str]:
        return list(self.tables[table].index) if table in self.tables else []

    def expected(self, table: str) -> list[str]:
        if table not in self.tables:
            return []
        t = self.tables[table]
        return [k for k in t.index if str(t.at[k, "ours"]).strip() == "1"]

    def text(self, table: str, key: str, column: str) -> str:
        t = self.tables.get(table)
        if t is None or key not in t.index or column not in t.columns:
            return ""
        return str(t.at[key, column])

    def value(self, table: str, key: str, column: str) -> float | None:
        return parse_cell(self.text(table, key, column))

    def has_values(self, table: str, column: str) -> bool:
        t = self.tables.get(table)
        return t is not None and column in t.columns and any(parse_cell(v) is not None for v in t[column])

    # --- equivalence of rows (union-find over ``same_as``) ------------------------------------
    def _find(self, r: Ref) -> Ref:
        self._parent.setdefault(r, r)
        while self._parent[r] != r:
            self._parent[r] = self._parent[self._parent[r]]
            r = self._parent[r]
        return r

    def _union(self, a: Ref, b: Ref) -> None:
        ra, rb = self._find(a), self._find(b)
        if ra != rb:
            self._parent[max(ra, rb)] = min(ra, rb)

    def group(self, table: str, key: str) -> list[Ref]:
        """Every (table, key) that is the same setting as (table, key), itself included, sorted."""
        root = self._find((str(table), str(key)))
        return sorted(r for r in list(self._parent) if self._find(r) == root)


def _parse_same_as(text: str, path: Path) -> Iterable[Ref]:
    for item in str(text).split():
        table, sep, key = item.partition(":")
        if not sep or not table or not key:
            raise ValueError(f"{path}: same_as item {item!r} is not 'table:key'")
        yield table, key


def load_reference(directory: str | Path) -> Reference:
    """Read every ``*.csv`` in ``directory``; the table id is the file stem without "table"."""
    directory = Path(directory)
    ref = Reference()
    links: list[tuple[Ref, Ref]] = []
    for path in sorted(directory.glob("*.csv")):
        table = path.stem.removeprefix("table")
        frame = pd.read_csv(path, comment="#", dtype=str, keep_default_na=False)
        missing = [c for c in META_COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(f"{path}: missing columns {missing}")
        if frame["key"].duplicated().any():
            raise ValueError(f"{path}: duplicate keys {sorted(frame['key'][frame['key'].duplicated()])}")
        frame = frame.set_index("key", drop=False)
        ref.tables[table] = frame
        for key, same in zip(frame["key"], frame["same_as"]):
            ref._find((table, key))
            links.extend(((table, key), other) for other in _parse_same_as(same, path))
    for a, b in links:
        if b[0] in ref.tables and b[1] not in ref.tables[b[0]].index:
            raise ValueError(f"reference: {a[0]}:{a[1]} is same_as {b[0]}:{b[1]}, which is not a row")
        ref._union(a, b)
    return ref
