"""Run folders end to end on a tiny data set (40 images, 10 iterations per epoch, seconds per run):
a finished run stays finished, one writer, preemption mid-epoch resumes bit for bit, the log
follows the checkpoint, config checks come before any write, file-system failures are one line,
and the teacher cache does not change the run."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from runfolder_helpers import REPO, SUBMIT, hold_at, mount_tmpfs, run_submit, tiny_imagenet, tiny_run_args, umount

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, full_demo_teacher: Path) -> Path:
    return tiny_imagenet(tmp_path_factory.mktemp("tiny_imagenet"))


def _losses(run: Path) -> list[tuple[int, float, int]]:
    return [(r["epoch"], r["loss"], r["step"]) for r in map(json.loads, (run / "log.jsonl").read_text().splitlines())]


def _sha(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _errors(res: subprocess.CompletedProcess) -> list[str]:
    """Every stderr line but the progress bar's."""
    return [ln for ln in res.stderr.splitlines() if ln.strip() and not re.match(r"^\s*epoch \d+/\d+:", ln)]


@pytest.fixture(scope="module")
def straight(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted two-epoch run with two DataLoader workers: the reference curve."""
    out = tmp_path_factory.mktemp("straight")
    res = run_submit("--local", *tiny_run_args(data, out, "r", "optim.epochs=3", "data.num_workers=2"))
    assert res.returncode == 0, res.stderr
    return out / "pretrain" / "r"


def test_rerun_of_a_finished_run_touches_nothing_and_restart_keeps_it_aside(straight: Path, data: Path,
                                                                           tmp_path: Path) -> None:
    run = tmp_path / "pretrain" / "r"
    shutil.copytree(straight, run)
    before, mtimes = _sha(run), {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    res = run_submit("--local", *tiny_run_args(data, tmp_path, "r", "optim.epochs=3", "data.num_workers=2"))
    assert res.returncode == 0, res.stderr
    assert f"r has finished already; nothing to do. Record: {run}/record.json" in res.stdout
    assert _sha(run) == before and {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == mtimes
    assert json.loads((run / "record.json").read_text())["pt_epochs"] == 3
    res = run_submit("--local", *tiny_run_args(data, tmp_path, "r", "optim.epochs=1", "runtime.restart=true",
                                               "data.num_workers=0"))
    assert res.returncode == 0, res.stderr
    assert "runtime.restart=true: kept the previous outputs aside as replaced-" in res.stdout
    aside = {p.name.split(".", 1)[1]: p for p in run.glob("replaced-*")}
    assert hashlib.sha256(aside["record.json"].read_bytes()).hexdigest() == before["record.json"]
    assert hashlib.sha256(aside["log.jsonl"].read_bytes()).hexdigest() == before["log.jsonl"]
    assert json.loads((run / "record.json").read_text())["pt_epochs"] == 1
    assert [e for e, _, _ in _losses(run)] == [0]


def test_resume_with_another_config_is_refused_before_config_yaml_is_touched(straight: Path, data: Path,
                                                                            tmp_path: Path) -> None:
    run = tmp_path / "pretrain" / "r"
    shutil.copytree(straight, run)
    (run / "record.json").unlink()  # an unfinished run
    before = _sha(run)
    res = run_submit("--local", *tiny_run_args(data, tmp_path, "r", "optim.epochs=3", "mask.ratio=0.5"))
    assert res.returncode == 2
    assert _errors(res) == [(f"error: {run}/checkpoint.pth: does not fit this config (mask.ratio=0.7 there, 0.5 now); "
                             "resume with the run's own config.yaml, or start over with runtime.restart=true "
                             "(the old outputs are kept aside)")]
    assert _sha(run) == before


def test_wrong_type_is_one_line_before_anything_is_written(tmp_path: Path, data: Path) -> None:
    res = run_submit("--local", *tiny_run_args(data, tmp_path, "t", "optim.epochs=three"))
    assert res.returncode == 2
    assert _errors(res) == ["error: command line: optim.epochs='three' is a string, expected an integer (default 20)"]
    assert not (tmp_path / "pretrain").exists()


def _start(data: Path, out: Path, name: str, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    args = tiny_run_args(data, out, name, "optim.epochs=3", "data.num_workers=2", "runtime.log_every=1", *extra)
    return subprocess.Popen([sys.executable, SUBMIT, "--local", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})


def _wait_for(pred, proc: subprocess.Popen, timeout: float = 600) -> None:
    """Wait for a state the job reaches by itself (a file it writes), never for a moment in time."""
    t_end = time.monotonic() + timeout
    while not pred():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < t_end, "the job never reached the awaited state"
        time.sleep(0.05)


def test_usr2_mid_epoch_checkpoints_and_resumes_bit_identical(straight: Path, data: Path, tmp_path: Path) -> None:
    """A second writer is refused while the first runs, `jobs status` says running; USR2 in epoch 2
    writes a mid-epoch checkpoint, workers end without a traceback; a crash that lost the last log
    line is repaired; the resumed run's losses equal the uninterrupted ones bit for bit."""
    from maskalign.checkpoint import load_file

    run, held = tmp_path / "pretrain" / "r", tmp_path / "held"
    # The job holds at epoch 2 after 3 iterations until it is signalled: deterministic on any load.
    proc = _start(data, tmp_path, "r", env=hold_at("1:3", held))
    _wait_for(held.is_file, proc)
    second = run_submit("--local", *tiny_run_args(data, tmp_path, "r", "optim.epochs=3", "data.num_workers=2"))
    assert second.returncode == 2
    assert _errors(second) == [(f"error: {run} is being written by pid {proc.pid} on {os.uname().nodename}, since "
                                f"{json.loads((run / 'run.lock').read_text())['started']}; wait for it to end")]
    status = subprocess.run([sys.executable, "-m", "maskalign.jobs", "status", str(tmp_path), "--json", "--no-slurm"],
                            capture_output=True, text=True, check=True)
    assert json.loads(status.stdout)["state"] == "running"
    proc.send_signal(signal.SIGUSR2)  # held in epoch 2
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 128 + signal.SIGUSR2, err
    assert "Traceback" not in err and "Error" not in err, err
    ckpt = load_file(run / "checkpoint.pth")
    assert (ckpt["epoch"], ckpt["iter_in_epoch"]) == (1, 3)
    assert f"stopped by SIGUSR2 at epoch 2, iteration {ckpt['iter_in_epoch']}/10" in out
    assert not (run / "run.lock").exists() and not (run / "record.json").exists()
    (run / "log.jsonl").write_text("")  # as if the job died between checkpoint and log line
    res = run_submit("--local", *tiny_run_args(data, tmp_path, "r", "optim.epochs=3", "data.num_workers=2"))
    assert res.returncode == 0, res.stderr
    assert f"resumed from {run}/checkpoint.pth at epoch 1, iteration {ckpt['iter_in_epoch']}/10" in res.stdout
    assert _losses(run) == _losses(straight)
    events = [e["event"] for e in map(json.loads, (run / "status.jsonl").read_text().splitlines())]
    assert events == ["started", "stopped", "started", "finished"]


def test_full_disk_and_read_only_folder_are_one_line_exit_2(data: Path, tmp_path: Path) -> None:
    small = tmp_path / "small"
    why = mount_tmpfs(small, "3m")  # config and log fit, the 9 MB checkpoint does not
    if why:
        pytest.skip(why)
    try:
        res = run_submit("--local", *tiny_run_args(data, small, "r", "optim.epochs=1", "data.num_workers=0"))
        assert res.returncode == 2
        assert _errors(res) == [f"error: cannot write {small}/pretrain/r/checkpoint.pth: No space left on device"]
        # A temp file a killed writer left behind goes at the next start.
        stale = small / "pretrain" / "r" / ".checkpoint.pth.x1y2z3.tmp"
        stale.write_bytes(b"half")
        run_submit("--local", *tiny_run_args(data, small, "r", "optim.epochs=1", "data.num_workers=0"))
        assert not stale.exists()
    finally:
        umount(small)
    ro = tmp_path / "ro"
    why = mount_tmpfs(ro, "1m", read_only=True)
    if why:
        pytest.skip(why)
    try:
        res = run_submit("--local", *tiny_run_args(data, ro, "r", "optim.epochs=1"))
        assert res.returncode == 2
        assert _errors(res) == [f"error: cannot create folder {ro}/pretrain/r: Read-only file system"]
    finally:
        umount(ro)


def _finetune(encoder: Path, output_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "transfer" / "finetune.py"), "--local", "--ckpt", str(encoder),
                           f"output_dir={output_dir}", "name=ft", "optim.epochs=1", "runtime.max_steps=1",
                           "data.num_workers=0"], capture_output=True, text=True, timeout=600, check=False)


def test_finetune_on_a_read_only_or_full_folder_is_one_line(straight: Path, tmp_path: Path) -> None:
    ro, small = tmp_path / "ro", tmp_path / "small"
    why = mount_tmpfs(ro, "1m", read_only=True) or mount_tmpfs(small, "1m")
    if why:
        umount(ro)
        pytest.skip(why)
    try:
        res = _finetune(straight / "encoder.pth", ro)
        assert res.returncode == 2, res.stderr
        assert _errors(res) == [f"error: cannot create folder {ro}/finetune/ft: Read-only file system"]
        res = _finetune(straight / "encoder.pth", small)
        assert res.returncode == 2, res.stderr
        errors = _errors(res)
        assert len(errors) == 1 and errors[0].startswith(f"error: cannot write {small}/finetune/ft/"), errors
        assert errors[0].endswith(": No space left on device"), errors
    finally:
        umount(ro)
        umount(small)


def test_same_losses_with_and_without_a_cached_teacher(data: Path, tmp_path: Path, tiny_demo_imagenet: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh demo world trains its teacher (the tiny world's size here) in the run's own process; the
    student's losses must equal those of the next run, which finds the teacher cached."""
    from conftest import pretrain_cfg

    from maskalign.engine.pretrain import train
    from maskalign.teachers import demo_teacher

    world = tmp_path / "world"
    shutil.copytree(tiny_demo_imagenet, world / "imagenet")
    monkeypatch.setenv("MASKALIGN_DEMO_ROOT", str(world))
    monkeypatch.setenv("MASKALIGN_DEMO_SIZE", "tiny")
    original = demo_teacher.train_demo_teacher
    trained = []

    def tiny_teacher(imagenet: Path, out: Path, **size: int) -> dict:
        trained.append(out)
        return original(imagenet, out, **size)

    monkeypatch.setattr(demo_teacher, "train_demo_teacher", tiny_teacher)
    overrides = [a for a in tiny_run_args(data, tmp_path, "x", "optim.epochs=1", "data.num_workers=0")
                 if not a.startswith(("output_dir=", "name="))]
    train(pretrain_cfg(tmp_path / "first", "name=x", *overrides))
    assert trained == [world / "teacher"]  # the first run trained it
    train(pretrain_cfg(tmp_path / "second", "name=x", *overrides))
    assert len(trained) == 1  # the second found it cached
    assert _losses(tmp_path / "first" / "pretrain" / "x") == _losses(tmp_path / "second" / "pretrain" / "x")
