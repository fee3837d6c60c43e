"""One odd record.json never stops the tables: every reader names it in one line and goes on
(``--strict`` fails instead); records are type-checked when written and read; run folders
linked into the output root are read, link cycles once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from maskalign.records import DataError, Record, read_record, write_record

REPO = Path(__file__).resolve().parents[1]


def _good(task: str = "pretrain", run: str = "a", **fields) -> Record:
    base = dict(run_id=f"{task}/{run}", task=task, method="maskalign", backbone="ViT-B/16", supervision="CLIP-B/16",
                forward_ratio=0.3, reconstruct_ratio=0.0, pt_epochs=200, metrics={"final_loss": 0.5},
                config={"x": 1}, start_time="2026-01-01T00:00:00+00:00")
    base.update(fields)
    return Record(**base)


BAD = {
    "not_utf8": b'{"schema": "maskalign.record/1", "run_id": "\xff\xfe"}',
    "null": b"null",
    "a_list": b"[1, 2]",
    "metrics_abc": None,  # a good record with "metrics": "abc"
    "pt_epochs_two": None,  # a good record with "pt_epochs": "two"
}


def _root(tmp_path: Path) -> Path:
    root = tmp_path / "output"
    write_record(root / "pretrain" / "good", _good())
    write_record(root / "finetune" / "good", _good("finetune", "good", metrics={"top1": 83.1}))
    good = json.loads((root / "pretrain" / "good" / "record.json").read_text())
    for name, content in BAD.items():
        folder = root / "finetune" / name
        folder.mkdir(parents=True)
        if content is None:
            data = dict(good, run_id=f"finetune/{name}", task="finetune")
            data.update({"metrics": "abc"} if name == "metrics_abc" else {"pt_epochs": "two"})
            content = json.dumps(data).encode()
        (folder / "record.json").write_bytes(content)
    return root


@pytest.mark.parametrize("name", sorted(BAD))
def test_each_bad_record_is_one_line_naming_it(tmp_path: Path, name: str) -> None:
    path = _root(tmp_path) / "finetune" / name / "record.json"
    with pytest.raises(DataError) as e:
        read_record(path)
    assert str(path) in str(e.value) and len(str(e.value).splitlines()) == 1


def test_numeric_fields_are_type_checked_when_written(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="pt_epochs='two' is not an integer"):
        write_record(tmp_path, _good(pt_epochs="two"))
    with pytest.raises(ValueError, match="metrics="):
        _good(metrics={"top1": "83"})
    with pytest.raises(ValueError, match="forward_ratio=True"):
        _good(forward_ratio=True)
    assert not (tmp_path / "record.json").exists()
    back = read_record(write_record(tmp_path, _good()))
    assert asdict(back)["pt_epochs"] == 200


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def test_make_tables_skips_bad_records_and_still_writes(tmp_path: Path) -> None:
    root, out = _root(tmp_path), tmp_path / "tables"
    res = _run("results/make_tables.py", "--root", str(root), "--out", str(out))
    assert res.returncode == 0, res.stderr
    bad_lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(bad_lines) == len(BAD), res.stderr
    for name in BAD:
        assert sum(str(root / "finetune" / name / "record.json") in ln for ln in bad_lines) == 1, res.stderr
    assert "read 2 records" in res.stdout
    assert (out / "table1.csv").is_file()
    strict = _run("results/make_tables.py", "--root", str(root), "--out", str(tmp_path / "t2"), "--strict")
    assert strict.returncode == 1


def test_jobs_status_skips_bad_records(tmp_path: Path) -> None:
    root = _root(tmp_path)
    res = _run("-m", "maskalign.jobs", "status", str(root), "--json", "--no-slurm")
    assert res.returncode == 0, res.stderr
    rows = {r["run"]: r for r in map(json.loads, res.stdout.splitlines())}
    assert rows["good"]["state"] == "done"
    assert {n for n, r in rows.items() if r["state"] == "bad record"} == set(BAD)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == len(BAD) and all(ln.startswith("skipped bad record ") for ln in lines), res.stderr
    strict = _run("-m", "maskalign.jobs", "status", str(root), "--no-slurm", "--strict")
    assert strict.returncode == 1


def test_symlinked_run_folders_are_read_and_cycles_once(tmp_path: Path) -> None:
    from maskalign.records import find_records

    root = tmp_path / "output"
    write_record(root / "pretrain" / "here", _good(run="here"))
    elsewhere = tmp_path / "other_fs" / "far"
    write_record(elsewhere, _good("finetune", "far", metrics={"top1": 80.0}))
    (root / "finetune").mkdir(parents=True)
    (root / "finetune" / "far").symlink_to(elsewhere, target_is_directory=True)
    (elsewhere / "loop").symlink_to(root, target_is_directory=True)  # a cycle back to the root
    found = find_records(root)
    assert found == sorted([root / "finetune" / "far" / "record.json", root / "pretrain" / "here" / "record.json"])
    res = _run("results/make_tables.py", "--root", str(root), "--out", str(tmp_path / "tables"))
    assert res.returncode == 0 and "read 2 records" in res.stdout, res.stdout + res.stderr
    res = _run("-m", "maskalign.jobs", "status", str(root), "--json", "--no-slurm")
    assert {r["run"]: r["state"] for r in map(json.loads, res.stdout.splitlines())} == {"far": "done", "here": "done"}
