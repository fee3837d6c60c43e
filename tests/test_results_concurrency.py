"""Many writers at once lose no record and never leave a partial one; bad files are named and skipped."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from results_fixtures import put

from maskalign.records import RECORD_FILENAME, find_records, read_record
from maskalign.results.render_all import make_tables

WRITER = r"""
import sys
from pathlib import Path
from maskalign.records import Record, write_record
root, name, folder, n = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
for i in range(n):
    rec = Record(run_id=name, task="finetune", method="maskalign", backbone="vit_base_patch16",
                 supervision="clip_b16", metrics={"top1": float(i), "pad": 1.0},
                 config={"writer": name, "i": i, "blob": "x" * 20000}, code_version="test", host="test",
                 end_time=f"2026-11-01T00:00:{i % 60:02d}+00:00")
    write_record(root / "finetune" / folder, rec)
"""


def test_ten_concurrent_writers_lose_nothing(tmp_path):
    n_writes = 30
    procs = []
    for k in range(8):  # eight writers, each in its own run folder
        procs.append(
            subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), f"w{k}", f"run{k}", str(n_writes)])
        )
    for k in range(2):  # two writers racing on the same folder
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", WRITER, str(tmp_path), f"racer{k}", "shared", str(n_writes)]
            )
        )
    shared = tmp_path / "finetune" / "shared" / RECORD_FILENAME
    while any(p.poll() is None for p in procs):  # read while they write: never a partial file
        if shared.exists():
            rec = read_record(shared)
            assert rec.run_id in {"racer0", "racer1"}
        time.sleep(0.001)
    assert all(p.wait(timeout=60) == 0 for p in procs)

    records = find_records(tmp_path)
    assert len(records) == 9
    runs = {p.parent.name: read_record(p) for p in records}
    for k in range(8):
        rec = runs[f"run{k}"]
        assert (
            rec.run_id == f"w{k}" and rec.metrics["top1"] == n_writes - 1 and rec.config["i"] == n_writes - 1
        )
    last = runs["shared"]
    assert last.run_id in {"racer0", "racer1"} and last.metrics["top1"] == n_writes - 1
    assert json.loads(shared.read_text())["config"]["writer"] == last.run_id
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")], "temporary files left behind"


def test_corrupt_records_named_and_skipped(tmp_path, capsys):
    root = tmp_path / "output"
    put(root, "finetune", "good", row="dynamic-top5", table="3", metrics={"top1": 85.04})
    good = put(root, "finetune", "truncated", row="dynamic-top1", table="3", metrics={"top1": 84.0})
    good.write_text(good.read_text()[:57])  # a crash mid-write by a non-atomic writer
    (root / "finetune" / "garbage").mkdir()
    (root / "finetune" / "garbage" / RECORD_FILENAME).write_text("\x00\x01 not json")
    (root / "coco" / "oldschema").mkdir(parents=True)
    (root / "coco" / "oldschema" / RECORD_FILENAME).write_text(json.dumps({"schema": "maskalign.record/0"}))
    (root / "coco" / "badfield").mkdir(parents=True)
    (root / "coco" / "badfield" / RECORD_FILENAME).write_text(
        json.dumps({"schema": "maskalign.record/1", "run_id": "x", "task": "coco", "typo_field": 1})
    )

    import importlib.util

    path = Path(__file__).resolve().parents[1] / "results" / "make_tables.py"
    spec = importlib.util.spec_from_file_location("_results_make_tables_c", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "tables"
    assert script.main(script.get_args_parser().parse_args(["--root", str(root), "--out", str(out)])) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 4
    for name in ("truncated", "garbage", "oldschema", "badfield"):
        assert sum(f"/{name}/{RECORD_FILENAME}" in line for line in err) == 1, name
    t3 = pd.read_csv(out / "table3.csv", dtype=str, keep_default_na=False)
    assert t3["Run"].tolist() == ["—", "—", "good", "—", "—", "—"]
    summary = make_tables(root, tmp_path / "again")
    assert len(summary.errors) == 4 and summary.n_records == 1
