"""Shape the collected records into the paper's tables, with the paper's numbers beside ours.

Each table is described by a :class:`Spec`; the paper's are :data:`SPECS`, and a registered task adds its
own through ``Task.tables()``. (Over 400 lines: the table builders share the slot rules below and are
read together.) Records reach a table's rows ("slots") through their
``paper_ref`` (see ``results/SCHEMA.md``):

* ablation tables (3-6) take ``finetune`` records tagged for that table, or for a row that the
  reference declares ``same_as`` one of its rows;
* Table 1 takes the other ``finetune`` records (untagged ones as extra rows), plus ``linprobe``
  records for the "LP Acc." column;
* Tables 2 and 7, robustness and segmentation take every record of their task; a record tagged for
  another table lands on the row with the same key (a transfer of the Table-1 ``maskalign`` run is
  the ``maskalign`` row of Table 2), else on an extra row.

A record no paper row claims gets a row of its own per *encoder* (its source: the file's sha256 or
the hub name; records without one, per method and setting), so two files never share a row and a
fine-tune and a linear probe of the same file meet on one row (a probe-only encoder gets its row
with the fine-tune cell blank). When several records fill one slot, those of the newest experiment
(config without seed, name and runtime) are kept and the others noted; of one seed the newest
run counts; several seeds print as ``mean ± std (n)`` (sample std) and the Run cell names them all.
Rows the suite should reproduce (``ours == 1`` in the reference) but that have no record are
kept, with :data:`~maskalign.results.fmt.MISSING` cells, and listed in :attr:`TableResult.missing`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from maskalign.metric_names import IN_C_CE_PREFIX, Metric
from maskalign.results import fmt
from maskalign.results.fmt import MISSING, NOT_APPLICABLE
from maskalign.results.reference import Reference

FINETUNE_ABLATIONS = ("3", "4", "5", "6")
IN_C_SPEC_NAME = "robustness_in_c"


@dataclass(frozen=True)
class Col:
    """A value column: ``column`` header, the record ``metric`` behind it (``None``: computed by
    the table), its format ``kind``, and whether the paper has it."""

    column: str
    metric: str | None = None
    kind: str = "acc"
    paper: bool = True
    delta: bool = True


@dataclass(frozen=True)
class Spec:
    """One table: plain data. A task adds its own by returning specs from ``Task.tables()`` (no edit
    here); a new protocol's table is ``Spec.of_task(...)``, the paper's tables are :data:`SPECS`.

    Args:
        name: the output file stem (``<out>/<name>.csv``, ``.md``).
        title: the heading printed above the table.
        task: the record ``task`` whose records make our rows.
        ref: the paper's reference table (``maskalign/results/paper_reference/table<ref>.csv``) that
            holds the paper's rows and numbers; ``""`` for a table of ours alone.
        settings: the columns that describe a row (Method, Backbone, ...), before the values.
        values: the value columns (:class:`Col`).
        settings_from: where our rows' settings come from: ``"record"`` (the record's own metadata)
            or ``"reference"`` (the paper's row the record is tagged for, as in the ablations).
        paper_rows: ``True`` for a comparison table: the paper's rows first, then ours, with a Source column.
        membership: which records land on which rows: ``"tagged"`` (a record's ``paper_ref`` names
            the table and row: Tables 1, 3-6) or ``"by_key"`` (every record of the task, on the row
            of its source or its tagged key: Tables 2, 7, robustness, segmentation, new protocols).
        protocol: only records whose config names this protocol (``linprobe``: ``mae`` or ``dinov2``).
    """

    name: str
    title: str
    task: str
    ref: str
    settings: tuple[str, ...]
    values: tuple[Col, ...]
    settings_from: str
    paper_rows: bool
    membership: str
    protocol: str | None = None

    @classmethod
    def of_task(cls, name: str, title: str, task: str, values: Sequence[Col | tuple[str, str]], *,
                settings: Sequence[str] = ("Method", "Backbone"), ref: str = "", protocol: str | None = None) -> Spec:
        """A table of one task's own records, one row per source, no paper numbers: what a new
        protocol returns from ``Task.tables()``. ``values``: :class:`Col` or ``(column, metric)`` pairs;
        ``ref``: a paper table whose tagged rows our records may name (``"1"``: rows keyed like Table 1's)."""
        cols = tuple(v if isinstance(v, Col) else Col(v[0], v[1], **OURS_ONLY) for v in values)
        return cls(name, title, task, ref, tuple(settings), cols, protocol=protocol, **TRANSFER)


def record_protocol(config: dict[str, Any] | None) -> str:
    """The protocol a record ran (its config's ``protocol``; MAE's probe for records without one)."""
    return str((config or {}).get("protocol") or "mae")


def of_protocol(records: pd.DataFrame, protocol: str | None) -> pd.DataFrame:
    if protocol is None or records.empty:
        return records
    return records[records["config"].map(lambda c: record_protocol(c) == protocol)]


@dataclass
class TableResult:
    spec: Spec
    frame: pd.DataFrame  # the printed table (strings)
    data: pd.DataFrame  # key, source, and float values per value column
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    used: set[str] = field(default_factory=set)  # paths of the records behind its cells
    set_aside: dict[str, str] = field(default_factory=dict)  # path -> why a record of its task is not shown

    def missing_line(self) -> str | None:
        if not self.missing:
            return None
        s = self.spec
        if s.membership == "tagged":
            how = f'with paper_ref {{"table": "{s.ref}", "row": <key>}}'
        else:
            how = "whose paper_ref row is <key>"
        return (
            f"{s.name}: missing {', '.join(self.missing)} "
            f"(no {s.task} record {how}, nor one for a row the reference marks same_as it)"
        )


#: Presets for :class:`Col` and :class:`Spec` fields, public so that a new table need not re-spell them.
#: A value column the paper does not report (no "Paper" column, no delta):
OURS_ONLY: dict[str, Any] = {"paper": False, "delta": False}
#: The paper's rows, then ours, settings read from our records (Tables 1, 2, 7):
COMPARISON: dict[str, Any] = {"settings_from": "record", "paper_rows": True}
#: Our runs tagged for the paper's rows, settings from the paper (Tables 3-6):
ABLATION: dict[str, Any] = {"settings_from": "reference", "paper_rows": False, "membership": "tagged"}
#: Every record of a task, a row per source (robustness, segmentation, new protocols):
TRANSFER: dict[str, Any] = {"settings_from": "record", "paper_rows": False, "membership": "by_key"}

SPECS: dict[str, Spec] = {s.name: s for s in [
    Spec("table1", "Table 1. Image classification: fine-tuning on ImageNet-1K", "finetune", "1",
          ("Method", "Backbone", "Supervision", "Forward Ratio", "Reconstruct Ratio", "Epochs"),
          (Col("FT Acc.", Metric.TOP1), Col("LP Acc.", **OURS_ONLY)), **COMPARISON, membership="tagged"),
    Spec("table2", "Table 2. COCO detection and instance segmentation (Mask R-CNN, ViTDet)", "coco", "2",
          ("Method", "Backbone", "Supervision", "PT Epochs"),
          (Col("AP box", Metric.AP_BOX), Col("AP mask", Metric.AP_MASK)),
          **COMPARISON, membership="by_key"),
    Spec("table3", "Table 3. Alignment strategy", "finetune", "3",
          ("Model", "Align Type", "Top K"), (Col("FT Acc.", Metric.TOP1),), **ABLATION),
    Spec("table4", "Table 4. Mask ratio and strategy", "finetune", "4",
          ("Mask Type", "Mask Ratio"), (Col("FT Acc.", Metric.TOP1),), **ABLATION),
    Spec("table5", "Table 5. Teacher models", "finetune", "5",
          ("Model", "Teacher Model"), (Col("S-FT Acc.", Metric.TOP1),), **ABLATION),
    Spec("table6", "Table 6. Adaptor, normalisation and [CLS]", "finetune", "6",
          ("Model", "Adaptor", "Norm", "[CLS]"), (Col("FT Acc.", Metric.TOP1),), **ABLATION),
    Spec("table7", "Table 7. Pre-training time (normalised to MaskAlign)", "speed", "7",
          ("Model", "Epochs"),
          (Col("Time", kind="times", delta=False), Col("FT Acc."), Col("Sec/Iter", kind="sec", **OURS_ONLY)),
          **COMPARISON, membership="by_key"),
    Spec("robustness", "Robustness: ImageNet variants (top-1, %) and ImageNet-C mCE (%, lower is better)",
          "robustness", "1", ("Method", "Backbone", "Supervision", "Epochs"),
          tuple(Col(c, m, **OURS_ONLY) for c, m in (
              ("IN-1K", Metric.IN1K_TOP1), ("IN-A", Metric.IN_A_TOP1), ("IN-R", Metric.IN_R_TOP1),
              ("IN-Sketch", Metric.IN_SKETCH_TOP1), ("IN-V2", Metric.IN_V2_TOP1), ("IN-C mCE", Metric.IN_C_MCE))),
          **TRANSFER),
    Spec("segmentation", "Semantic segmentation: ADE20K (UperNet, single-scale)", "ade20k", "1",
          ("Method", "Backbone", "Supervision", "Epochs"),
          (Col("mIoU", Metric.MIOU, **OURS_ONLY), Col("aAcc", Metric.AACC, **OURS_ONLY)), **TRANSFER),
]}  # fmt: skip



def all_specs() -> list[Spec]:
    """The paper's tables, then those the registered tasks declare (``Task.tables()``)."""
    from maskalign.tasks import registered_tasks

    specs = dict(SPECS)
    for task in registered_tasks().values():
        for spec in task.tables():
            if spec.name in specs or spec.name == IN_C_SPEC_NAME:
                raise ValueError(f"task {task.name}: table {spec.name!r} exists already")
            specs[spec.name] = spec
    return list(specs.values())


# --- which slot a record fills ----------------------------------------------------------------
SOURCE_SLOT = "~src:"


def untagged_slot(rec: pd.Series) -> str:
    source = rec.get("source")
    if isinstance(source, str) and source:
        return SOURCE_SLOT + source  # one row per encoder: never merged with another file's
    parts = [
        rec["method"],
        rec["backbone"],
        rec["supervision"],
        rec["forward_ratio"],
        rec["reconstruct_ratio"],
        rec["pt_epochs"],
    ]
    return "~" + json.dumps([None if pd.isna(p) else p for p in parts], default=str)


def slot_label(slot: str) -> str:
    if slot.startswith(SOURCE_SLOT):
        return f"encoder {slot[len(SOURCE_SLOT):][:40]}"
    if slot.startswith("~"):
        method = json.loads(slot[1:])[0]
        return f"{method} (untagged)"
    return slot


def slot_of(rec: pd.Series, spec: Spec, ref: Reference) -> str | None:
    """The row key ``rec`` fills in ``spec``'s table, or None when it belongs elsewhere."""
    t, r = rec["ref_table"], rec["ref_row"]
    if t is None or r is None or pd.isna(t) or pd.isna(r):
        return None if spec.membership == "tagged" and spec.ref != "1" else untagged_slot(rec)
    group = ref.group(t, r)
    for gt, gk in group:
        if gt == spec.ref:
            return gk
    if spec.membership == "tagged":
        if spec.ref == "1" and not any(gt in FINETUNE_ABLATIONS for gt, _ in group):
            return f"{t}:{r}"  # tagged for a table that has no fine-tuning rows: an extra row
        return None
    keys = set(ref.keys(spec.ref))
    if r in keys:
        return r
    for _, gk in group:
        if gk in keys:
            return gk
    return f"{t}:{r}"


class Measured(float):
    """A table value that is the mean of ``n`` seeds, with their sample standard deviation."""

    std: float
    n: int

    def __new__(cls, mean: float, std: float, n: int) -> Measured:
        obj = super().__new__(cls, mean)
        obj.std, obj.n = std, n
        return obj


def _aggregate(group: pd.DataFrame) -> pd.Series:
    """One series standing for several seeds: metric means (as :class:`Measured`), every run named."""
    newest = group.iloc[-1].copy()
    metrics: dict[str, float] = {}
    names = sorted({k for m in group["metrics"] for k in m})
    for name in names:
        vals = [float(m[name]) for m in group["metrics"] if fmt.is_number(m.get(name))]
        if not vals:
            continue
        std = float(pd.Series(vals).std(ddof=1)) if len(vals) > 1 else 0.0
        metrics[name] = Measured(sum(vals) / len(vals), std, len(vals)) if len(vals) > 1 else vals[0]
    newest["metrics"] = metrics
    newest["run_id"] = ", ".join(str(r) for r in group["run_id"])
    newest["paths"] = list(group["path"])
    return newest


def newest_per_slot(
    frame: pd.DataFrame, spec: Spec, ref: Reference, what: str, notes: list[str],
    set_aside: dict[str, str] | None = None,
) -> dict[str, pd.Series]:
    """slot -> the record (or the seeds' aggregate) that fills it; notes say which runs were set aside
    (and ``set_aside`` maps each such record's path to why)."""
    if frame.empty:
        return {}
    slots = frame.apply(lambda rec: slot_of(rec, spec, ref), axis=1)
    frame = frame.assign(slot=slots).dropna(subset=["slot"])
    frame = frame.sort_values(["end_ts", "path"], na_position="first", kind="stable")
    chosen: dict[str, pd.Series] = {}
    for slot, group in frame.groupby("slot", sort=False):
        keys = group["config_key"] if "config_key" in group else pd.Series([""] * len(group), index=group.index)
        newest_key = keys.iloc[-1]
        same = group[keys == newest_key]
        other = group[keys != newest_key]
        seeds = same["seed"] if "seed" in same else pd.Series([None] * len(same), index=same.index)
        seed_key = seeds.map(lambda v: None if pd.isna(v) else int(v))
        last_of_seed = same[~seed_key.duplicated(keep="last")]
        rerun = same[seed_key.duplicated(keep="last")]
        chosen[slot] = _aggregate(last_of_seed) if len(last_of_seed) > 1 else last_of_seed.iloc[-1]
        kept = chosen[slot]
        for o in rerun.itertuples():
            if set_aside is not None:
                set_aside[o.path] = f"an older run of the same seed as {kept.run_id} in {spec.name}"
        for o in other.itertuples():
            if set_aside is not None:
                set_aside[o.path] = f"another config of the same encoder; {spec.name} shows the newer {kept.run_id}"
        if len(rerun) or len(other):
            older = ", ".join(f"{o.run_id} ({o.end_time})" for o in pd.concat([rerun, other]).itertuples())
            notes.append(
                f"{spec.name} {slot_label(slot)}: {len(group)} {what} records, using "
                f"{'the newest' if len(last_of_seed) == 1 else f'{len(last_of_seed)} seeds'}, "
                f"{kept.run_id} ({kept.end_time}); ignored {older}"
            )
    return chosen


# --- values of ours rows ----------------------------------------------------------------------
def _metric(rec: pd.Series | None, name: str, spec: Spec, slot: str, notes: list[str]) -> float | None:
    if rec is None:
        return None
    v = rec["metrics"].get(name)
    if fmt.is_number(v):
        return v if isinstance(v, Measured) else float(v)
    notes.append(f"{spec.name} {slot_label(slot)}: record {rec['path']} has no metric {str(name)!r}")
    return None


def _epochs(rec: pd.Series) -> float | None:
    e = rec["config"].get("epochs")
    if fmt.is_number(e):
        return float(e)
    return None if pd.isna(rec["pt_epochs"]) else float(rec["pt_epochs"])


Values = Callable[[str, "pd.Series | None"], dict[str, float | None]]


def _plain_values(spec: Spec, notes: list[str]) -> Values:
    def values(slot: str, rec: pd.Series | None) -> dict[str, float | None]:
        return {
            c.column: _metric(rec, c.metric, spec, slot, notes)
            for c in spec.values
            if c.metric is not None
        }

    return values


def _table1_values(spec: Spec, lp: dict[str, pd.Series], notes: list[str]) -> Values:
    plain = _plain_values(spec, notes)

    def values(slot: str, rec: pd.Series | None) -> dict[str, float | None]:
        out = plain(slot, rec)
        lp_rec = lp.get(slot)
        out["LP Acc."] = _metric(lp_rec, Metric.TOP1, spec, slot, notes) if lp_rec is not None else None
        return out

    return values


def _table7_values(
    spec: Spec, ref: Reference, records: pd.DataFrame, chosen: dict[str, pd.Series], notes: list[str]
) -> Values:
    ft = newest_per_slot(records[records["task"] == "finetune"], spec, ref, "finetune", notes)

    def cost(rec: pd.Series | None, per_iter: bool) -> float | None:
        if rec is None:
            return None
        ep = _epochs(rec)
        m = rec["metrics"]
        if per_iter:
            spi = m.get(Metric.SEC_PER_ITER)
            return float(spi) * ep if fmt.is_number(spi) and ep is not None else None
        ips = m.get(Metric.IMAGES_PER_S)
        return ep / float(ips) if fmt.is_number(ips) and ips > 0 and ep is not None else None

    base = chosen.get("maskalign")
    if base is None and chosen:
        notes.append(f"{spec.name}: no speed record for maskalign, the 1.0× reference; Time is missing")
    rows = list(chosen.values()) + [base]
    per_iter = all(fmt.is_number(r["metrics"].get(Metric.SEC_PER_ITER)) for r in rows if r is not None)

    def values(slot: str, rec: pd.Series | None) -> dict[str, float | None]:
        c, b = cost(rec, per_iter), cost(base, per_iter)
        ft_rec = ft.get(slot, ft.get(f"1:{slot}"))  # an extra Table-7 row: its Table-1 run, same key
        spi = rec["metrics"].get(Metric.SEC_PER_ITER) if rec is not None else None
        return {
            "Time": c / b if c is not None and b else None,
            "FT Acc.": _metric(ft_rec, Metric.TOP1, spec, slot, notes) if ft_rec is not None else None,
            "Sec/Iter": float(spi) if fmt.is_number(spi) else None,
        }

    return values


# --- settings of ours rows --------------------------------------------------------------------
def _record_settings(spec: Spec, ref: Reference, slot: str, rec: pd.Series) -> dict[str, str]:
    name = ref.text(spec.ref, slot, spec.settings[0]) or ref.text(spec.ref, slot, "Method")
    if not name:  # an extra row: the method (and file), and the row key when it was tagged for another table
        method = rec.get("pretraining") if isinstance(rec.get("pretraining"), str) else rec["method"]
        name = fmt.row_name(method, rec.get("source_name") if rec.get("external") else None)
        name += f" [{slot}]" if ":" in slot and not slot.startswith("~") else ""
    getters = {
        "Method": lambda: name,
        "Model": lambda: name,
        "Backbone": lambda: fmt.backbone_name(rec["backbone"]),
        "Supervision": lambda: fmt.supervision_name(rec["supervision"]),
        "Forward Ratio": lambda: fmt.percent(rec["forward_ratio"]),
        "Reconstruct Ratio": lambda: fmt.percent(rec["reconstruct_ratio"]),
        "Epochs": lambda: fmt.integer(_epochs(rec) if spec.task == "speed" else rec["pt_epochs"]),
        "PT Epochs": lambda: fmt.integer(rec["pt_epochs"]),
        "Head": lambda: str((rec["config"].get("winner") or {}).get("name", NOT_APPLICABLE)),
    }
    return {c: getters[c]() for c in spec.settings}


def _reference_settings(spec: Spec, ref: Reference, slot: str, rec: pd.Series | None) -> dict[str, str]:
    if slot in ref.keys(spec.ref):
        return {c: ref.text(spec.ref, slot, c) for c in spec.settings}
    out = {c: NOT_APPLICABLE for c in spec.settings}
    cols = list(spec.settings)
    if cols[0] == "Model" and rec is not None:
        out["Model"] = fmt.backbone_name(rec["backbone"])
        cols = cols[1:]
    out[cols[0]] = slot_label(slot)
    return out


# --- the table ----------------------------------------------------------------------------
def value_columns(spec: Spec, ref: Reference) -> tuple[list[str], list[str]]:
    """(ours value columns, paper/delta columns) in output order."""
    ours = [c.column for c in spec.values]
    paper: list[str] = []
    with_delta = [c for c in spec.values if c.delta and ref.has_values(spec.ref, c.column)]
    for c in spec.values:
        if c.paper and ref.has_values(spec.ref, c.column):
            paper.append(f"Paper {c.column}")
            if c.delta:
                paper.append("Δ" if len(with_delta) == 1 else f"Δ {c.column}")
    return ours, paper


def build_table(spec: Spec, ref: Reference, records: pd.DataFrame) -> TableResult:
    notes: list[str] = []
    set_aside: dict[str, str] = {}
    mine = of_protocol(records[records["task"] == spec.task], spec.protocol)
    chosen = newest_per_slot(mine, spec, ref, spec.task, notes, set_aside)
    shown = dict(chosen)  # slot -> the record whose settings name the row
    lp: dict[str, pd.Series] = {}
    if spec.name == "table1":
        lp_records = of_protocol(records[records["task"] == "linprobe"], "mae")  # the paper's probe, not DINOv2's grid
        lp = newest_per_slot(lp_records, spec, ref, "linprobe", notes, set_aside)
        values = _table1_values(spec, lp, notes)
        shown.update({slot: rec for slot, rec in lp.items() if slot not in shown})  # probe-only encoders
    elif spec.name == "table7":
        values = _table7_values(spec, ref, records, chosen, notes)
    else:
        values = _plain_values(spec, notes)

    ours_cols, paper_cols = value_columns(spec, ref)
    tail = (["Source"] if spec.paper_rows else []) + ["Run"]
    columns = list(spec.settings) + ours_cols + paper_cols + tail
    kinds = {c.column: c.kind for c in spec.values}
    rows: list[dict[str, str]] = []
    data: list[dict[str, object]] = []

    if spec.paper_rows:
        for key in ref.keys(spec.ref):
            row = {c: NOT_APPLICABLE for c in columns}
            row.update({c: ref.text(spec.ref, key, c) for c in spec.settings})
            for c in spec.values:
                if c.paper:
                    row[c.column] = ref.text(spec.ref, key, c.column)
            row["Source"] = "paper"
            rows.append(row)
            data.append(
                {
                    "key": key,
                    "source": "paper",
                    **{c.column: ref.value(spec.ref, key, c.column) for c in spec.values},
                }
            )

    known = ref.keys(spec.ref)
    expected = ref.expected(spec.ref)
    order = [k for k in known if k in shown or k in expected]
    order += sorted(k for k in shown if k not in known)
    missing = [k for k in expected if k not in chosen]
    used: set[str] = set()

    for slot in order:
        rec = chosen.get(slot)
        named_by = shown.get(slot)  # the record itself, or (probe-only encoder) its linear probe
        for r in (rec, lp.get(slot)):
            if r is not None:
                used.update(_paths(r))
        if spec.settings_from == "reference":
            settings = _reference_settings(spec, ref, slot, named_by)
        elif named_by is None:  # a run still to do: name the row, claim no settings
            settings = {c: MISSING for c in spec.settings}
            settings[spec.settings[0]] = ref.text(spec.ref, slot, spec.settings[0]) or slot
        else:
            settings = _record_settings(spec, ref, slot, named_by)
        vals = values(slot, rec)
        row = {c: NOT_APPLICABLE for c in columns}
        row.update(settings)
        for col in ours_cols:
            row[col] = _cell(vals.get(col), kinds[col])
        for c in spec.values:
            if f"Paper {c.column}" in row:
                paper_text = ref.text(spec.ref, slot, c.column)
                row[f"Paper {c.column}"] = paper_text
                if c.delta:
                    dcol = "Δ" if "Δ" in columns else f"Δ {c.column}"
                    printed = fmt.parse_cell(row[c.column].split(" ± ")[0])  # Δ of the printed (rounded) mean
                    row[dcol] = fmt.delta(printed, ref.value(spec.ref, slot, c.column))
        if spec.paper_rows:
            row["Source"] = "ours"
        row["Run"] = _runs(rec, lp.get(slot))
        rows.append(row)
        data.append(
            {
                "key": slot,
                "source": "ours",
                **{c: vals.get(c) for c in ours_cols},
                **{f"Paper {c.column}": ref.value(spec.ref, slot, c.column) for c in spec.values},
            }
        )

    frame = pd.DataFrame(rows, columns=columns).fillna(NOT_APPLICABLE)
    return TableResult(spec, frame, pd.DataFrame(data), missing, notes, used, set_aside)


def _paths(rec: pd.Series) -> list[str]:
    paths = rec.get("paths")
    return list(paths) if isinstance(paths, list) else [str(rec["path"])]


def _runs(rec: pd.Series | None, lp: pd.Series | None) -> str:
    """The Run cell: every run behind the row's numbers (a linear probe's after ``LP``)."""
    runs = [str(rec["run_id"])] if rec is not None else []
    if lp is not None:
        runs.append(f"LP {lp['run_id']}")
    return "; ".join(runs) or MISSING


def _cell(v: float | None, kind: str) -> str:
    """A value as printed: the number, or ``mean ± std (n)`` for several seeds."""
    text = fmt.fmt(v, kind)
    if isinstance(v, Measured) and v.n > 1:
        text += f" ± {fmt.fmt(v.std, kind)} ({v.n})"
    return text


def build_in_c_table(ref: Reference, records: pd.DataFrame) -> TableResult:
    """Per-corruption ImageNet-C CE (%) of the robustness records (metrics ``in_c_ce/<name>``)."""
    spec = SPECS["robustness"]
    notes: list[str] = []
    chosen = newest_per_slot(records[records["task"] == "robustness"], spec, ref, "robustness", [])
    names = sorted(
        {k[len(IN_C_CE_PREFIX):] for rec in chosen.values() for k in rec["metrics"] if k.startswith(IN_C_CE_PREFIX)}
    )
    known = ref.keys(spec.ref)
    order = [k for k in known if k in chosen] + sorted(k for k in chosen if k not in known)
    rows = []
    for slot in order:
        rec = chosen[slot]
        row = {"Method": _record_settings(spec, ref, slot, rec)["Method"]}
        row.update({n: fmt.one_decimal(rec["metrics"].get(f"{IN_C_CE_PREFIX}{n}")) for n in names})
        row["IN-C mCE"] = fmt.one_decimal(rec["metrics"].get(Metric.IN_C_MCE))
        row["Run"] = str(rec["run_id"])
        rows.append(row)
    in_c_spec = Spec(IN_C_SPEC_NAME, "ImageNet-C corruption error per corruption (%, lower is better)",
                     "robustness", "1", ("Method",), (), **TRANSFER)  # fmt: skip
    frame = pd.DataFrame(rows, columns=["Method", *names, "IN-C mCE", "Run"])
    return TableResult(in_c_spec, frame, pd.DataFrame(rows), [], notes)


def build_all(ref: Reference, records: pd.DataFrame) -> list[TableResult]:
    """Every table: the paper's, the per-corruption one, then the registered tasks' own."""
    specs = all_specs()
    out = [build_table(spec, ref, records) for spec in specs if spec.name in SPECS]
    out.append(build_in_c_table(ref, records))
    out += [build_table(spec, ref, records) for spec in specs if spec.name not in SPECS]
    return out
