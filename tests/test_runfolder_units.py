"""Run-folder rules without training: file modes, I/O failures, the lock, status history, signals,
resumable data, config types, SLURM-path checks and the launcher's fallback (all fast)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from runfolder_helpers import REPO, fake_slurm, mount_tmpfs, umount

from maskalign import jobs
from maskalign.atomic import atomic_torch_save, atomic_write_text, remove_stale_temps
from maskalign.config import ConfigError, config_dir, load_config
from maskalign.errors import PathError
from maskalign.runfolder import history, preempt
from maskalign.runfolder.lock import LOCK_FILE, Holder, RunFolderError, RunLock, read_holder

CONFIGS = config_dir("pretrain")


# --- item 6: modes ------------------------------------------------------------------------------

@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_atomic_files_get_the_umask_mode(tmp_path: Path, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        a = atomic_write_text(tmp_path / "a.txt", "x")
        b = atomic_torch_save({"w": torch.zeros(2)}, tmp_path / "b.pth")
        plain = tmp_path / "plain.txt"
        plain.write_text("x")  # what any other file of the process gets
    finally:
        os.umask(old)
    assert {a.stat().st_mode & 0o777, b.stat().st_mode & 0o777} == {plain.stat().st_mode & 0o777} == {mode}


# --- item 7: file-system failures, one line each ---------------------------------------------------

@pytest.fixture
def tiny_fs(tmp_path: Path):
    where = tmp_path / "small"
    why = mount_tmpfs(where, "256k")
    if why:
        pytest.skip(why)
    yield where
    umount(where)


def test_full_disk_is_one_line_naming_path_and_cause_and_keeps_the_old_file(tiny_fs: Path) -> None:
    target = tiny_fs / "run" / "checkpoint.pth"
    atomic_torch_save({"w": torch.ones(10)}, target)
    before = target.read_bytes()
    with pytest.raises(PathError) as e:
        atomic_torch_save({"w": torch.zeros(200_000)}, target)  # 800 kB into 256 kB
    assert str(e.value) == f"cannot write {target}: No space left on device"
    assert target.read_bytes() == before
    assert [p.name for p in target.parent.iterdir()] == ["checkpoint.pth"]  # no temp file left


def test_read_only_folder_is_one_line(tmp_path: Path) -> None:
    where = tmp_path / "ro"
    why = mount_tmpfs(where, "64k", read_only=True)
    if why:
        pytest.skip(why)
    try:
        with pytest.raises(PathError, match=rf"^cannot create folder {where}/run: Read-only file system$"):
            atomic_write_text(where / "run" / "config.yaml", "x")
        with pytest.raises(PathError, match=rf"^cannot write {where}/config.yaml: Read-only file system$"):
            atomic_write_text(where / "config.yaml", "x")
    finally:
        umount(where)


def test_a_file_where_the_folder_should_be_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("not a folder")
    with pytest.raises(PathError, match=r"out is a file, not a folder$"):
        atomic_write_text(tmp_path / "out" / "pretrain" / "x" / "record.json", "{}")


def test_temp_files_of_killed_writes_are_removed(tmp_path: Path) -> None:
    for name in (".checkpoint.pth.k2j_4x.tmp", ".record.json.abc123.tmp"):
        (tmp_path / name).write_bytes(b"half")
    (tmp_path / "checkpoint.pth").write_bytes(b"whole")
    (tmp_path / "notes.tmp").write_text("the user's own")
    removed = remove_stale_temps(tmp_path)
    assert sorted(p.name for p in removed) == [".checkpoint.pth.k2j_4x.tmp", ".record.json.abc123.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pth", "notes.tmp"]


# --- item 5: config types -------------------------------------------------------------------------

@pytest.mark.parametrize("override,message", [
    ("optim.epochs=three", "command line: optim.epochs='three' is a string, expected an integer (default 20)"),
    ("optim.epochs=2.5", "command line: optim.epochs=2.5 is a number, expected an integer (default 20)"),
    ("runtime.compile=1", "command line: runtime.compile=1 is an integer, expected a boolean"),
    ("optim.betas=0.9", "command line: optim.betas=0.9 is a number, expected a list"),
])
def test_wrong_types_are_refused_naming_key_value_and_type(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(None, [override], CONFIGS)
    assert str(e.value).startswith(message)


def test_right_types_and_every_shipped_config_load(tmp_path: Path) -> None:
    cfg = load_config(None, ["optim.blr=1", "teacher.input_size=196", "data.root=/x"], CONFIGS)
    assert cfg.optim.blr == 1 and cfg.teacher.input_size == 196
    for f in sorted(CONFIGS.glob("*.yaml")):
        load_config(f, [], CONFIGS)
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"base: {CONFIGS / 'default.yaml'}\noptim:\n  epochs: many\n")
    with pytest.raises(ConfigError, match=rf"^{bad}: optim.epochs='many'"):
        load_config(bad, [], CONFIGS)


# --- item 1: the lock -----------------------------------------------------------------------------

def _holder_process(folder: Path) -> subprocess.Popen:
    code = (f"from maskalign.runfolder.lock import RunLock; import time, sys; RunLock({str(folder)!r}).acquire();"
            f"print('held', flush=True); time.sleep(120)")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert p.stdout.readline().strip() == "held"
    return p


def test_second_writer_is_refused_naming_the_holder_and_a_dead_one_is_taken_over(tmp_path: Path) -> None:
    p = _holder_process(tmp_path)
    try:
        with pytest.raises(RunFolderError) as e:
            RunLock(tmp_path).acquire()
        assert f"is being written by pid {p.pid} on {socket.gethostname()}" in str(e.value)
        assert "\n" not in str(e.value)
    finally:
        p.kill()
        p.wait()
    # Killed (-9): its lock stays behind, and is stale.
    assert read_holder(tmp_path).pid == p.pid
    lock = RunLock(tmp_path).acquire()
    assert lock.note.startswith(f"took over the stale lock of pid {p.pid}")
    assert read_holder(tmp_path).pid == os.getpid()
    lock.release()
    assert not (tmp_path / LOCK_FILE).exists()


def test_a_reused_pid_number_does_not_keep_a_lock(tmp_path: Path) -> None:
    me = Holder.me()
    me.pid_start = "1"  # this pid, but a process that started at another time
    (tmp_path / LOCK_FILE).write_text(json.dumps(me.__dict__))
    assert RunLock(tmp_path).acquire().note.startswith("took over the stale lock")


def _foreign(job_id: str | None, host: str = "other-node") -> dict:
    return {"host": host, "pid": 4242, "pid_start": "7", "job_id": job_id, "started": "2026-01-01T00:00:00"}


def test_locks_of_other_hosts_are_judged_by_their_slurm_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from maskalign.runfolder import lock as lock_mod

    states = {"77": "RUNNING", "78": "COMPLETED", "79": ""}
    monkeypatch.setattr(lock_mod, "job_state", lambda j: states.get(j))
    for job, outcome in (("77", "refused"), ("78", "taken"), ("79", "taken"), (None, "unknown")):
        (tmp_path / LOCK_FILE).write_text(json.dumps(_foreign(job)))
        if outcome == "taken":
            lock = RunLock(tmp_path).acquire()
            assert f"(SLURM job {job})" in lock.note
            lock.release()
        else:
            with pytest.raises(RunFolderError) as e:
                RunLock(tmp_path).acquire()
            assert "pid 4242 on other-node" in str(e.value)
            assert ("cannot check that host" in str(e.value)) == (outcome == "unknown")


def test_a_requeued_start_of_the_same_job_is_the_same_owner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "555")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    (tmp_path / LOCK_FILE).write_text(json.dumps(_foreign("555")))
    lock = RunLock(tmp_path).acquire()
    assert lock.note == "took over the lock of an earlier start of SLURM job 555 (requeued)"
    lock.release()


# --- item 9 (and 1): what `jobs status` says -------------------------------------------------------

def _status(folder: Path, slurm: dict | None) -> jobs.RunStatus:
    return jobs.run_status(folder, slurm)


def _job_json(folder: Path, job: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "job.json").write_text(json.dumps({"job_id": job}))


def test_status_of_a_local_run_in_progress_is_running_and_stopped_after(tmp_path: Path) -> None:
    run = tmp_path / "pretrain" / "x"
    run.mkdir(parents=True)
    (run / "log.jsonl").write_text('{"epoch": 0, "loss": 1.0}\n')
    p = _holder_process(run)
    try:
        st = _status(run, None)
        assert st.state == "running" and f"pid {p.pid}" in st.detail
    finally:
        p.kill()
        p.wait()
    st = _status(run, None)
    assert st.state == "stopped" and "resubmit to resume" in st.detail


def test_requeued_job_shows_as_requeued(tmp_path: Path) -> None:
    run = tmp_path / "pretrain" / "x"
    _job_json(run, "900")
    history.record_event(run, "submitted", job_id="900")
    assert _status(run, {"900": ("PENDING", "Priority")}).state == "pending"
    history.record_event(run, "started", job_id="900")
    history.record_event(run, "stopped", job_id="900", signal="SIGUSR2", detail="at epoch 1, iteration 3/5")
    st = _status(run, {"900": ("PENDING", "BeginTime")})
    assert st.state == "requeued" and "BeginTime" in st.detail


def test_cancelled_and_failed_jobs_are_remembered_after_slurm_forgets(tmp_path: Path) -> None:
    cancelled, failed = tmp_path / "probe" / "c", tmp_path / "pretrain" / "f"
    _job_json(cancelled, "901")
    history.record_event(cancelled, "submitted", job_id="901")
    assert _status(cancelled, {"901": ("CANCELLED", "DependencyNeverSatisfied")}).state == "cancelled"
    st = _status(cancelled, {})  # SLURM has forgotten it
    assert (st.state, st.detail) == ("cancelled", "DependencyNeverSatisfied")
    _job_json(failed, "902")
    history.record_event(failed, "started", job_id="902")
    history.record_event(failed, "failed", job_id="902", error="DataError: data folder not found: /x/train")
    for slurm in ({}, None):
        st = _status(failed, slurm)
        assert st.state == "failed" and "data folder not found" in st.detail


def test_without_slurm_a_submitted_job_is_not_shown_as_just_submitted(tmp_path: Path) -> None:
    run = tmp_path / "pretrain" / "x"
    _job_json(run, "903")
    history.record_event(run, "submitted", job_id="903")
    st = _status(run, None)
    assert st.state == "unknown" and "cannot ask SLURM" in st.detail
    history.record_event(run, "started", job_id="903", host="elsewhere")
    assert _status(run, None).state == "started"
    assert _status(run, {}).state == "lost"


# --- item 3: signals set a flag ---------------------------------------------------------------------

def test_stop_signals_only_set_a_flag_and_submitit_requeues_after(monkeypatch: pytest.MonkeyPatch) -> None:
    called = []
    prev = signal.signal(signal.SIGUSR2, lambda s, f: called.append(s))
    try:
        restore = preempt.install_handler()
        assert preempt.stop_requested() is None
        os.kill(os.getpid(), signal.SIGUSR2)
        time.sleep(0.05)
        assert preempt.stop_requested() == signal.SIGUSR2 and called == []  # nothing ran in the handler
        with pytest.raises(preempt.Stopped) as e:
            preempt.stop_now("checkpointed")
        assert called == [signal.SIGUSR2] and e.value.code == 128 + signal.SIGUSR2
        restore()
    finally:
        signal.signal(signal.SIGUSR2, prev)


def test_sigterm_stops_without_requeueing() -> None:
    called = []
    prev = signal.signal(signal.SIGUSR2, lambda s, f: called.append(s))
    prev_term = signal.getsignal(signal.SIGTERM)
    try:
        preempt.install_handler()
        preempt.enter_step_loop()  # outside the step loop TERM ends at once (tests/test_stop_signals.py)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        with pytest.raises(preempt.Stopped) as e:
            preempt.stop_now("checkpointed")
        assert e.value.code == 128 + signal.SIGTERM and called == []
        assert signal.getsignal(signal.SIGTERM) == prev_term
    finally:
        signal.signal(signal.SIGUSR2, prev)


# --- item 3: data that resumes mid-epoch --------------------------------------------------------------

class _Noise(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 24

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.rand(3) + i  # an "augmentation" drawn from torch's global RNG


def _batches(workers: int, skip: int, epoch: int = 1) -> list[torch.Tensor]:
    from maskalign.data.decode import build_loader

    # The pre-training engine's own loader (CPU decode), one process, resumed ``skip`` samples in.
    loader, sampler = build_loader(_Noise(), 4, rank=0, world=1, seed=3, num_workers=workers,
                                   device=torch.device("cpu"), decode="cpu")
    sampler.set_epoch(epoch, skip)
    return list(loader)


def test_samples_are_the_same_with_any_workers_and_after_skipping() -> None:
    torch.manual_seed(0)
    before = torch.get_rng_state()
    full = _batches(0, 0)
    assert torch.equal(torch.get_rng_state(), before)  # the caller's RNG is not consumed
    assert all(torch.equal(a, b) for a, b in zip(full, _batches(2, 0)))
    tail = _batches(2, 8)  # two batches of 4 consumed before a preemption
    assert len(tail) == len(full) - 2 and all(torch.equal(a, b) for a, b in zip(full[2:], tail))
    assert not torch.equal(full[0], _batches(0, 0, epoch=2)[0])  # another epoch, other draws


# --- item 8 and 10: the launcher ------------------------------------------------------------------------

def test_slurm_path_validates_before_sbatch(tmp_path: Path) -> None:
    from maskalign import launch as L
    from maskalign.tasks import job_for

    log = tmp_path / "calls.log"
    env = fake_slurm(tmp_path / "bin", sinfo_rc=0, log=log)
    job = job_for("pretrain", output_root=tmp_path, run="x",
                  overrides=["data.dataset=imagenet", f"data.root={tmp_path}/nowhere"])
    args = L.get_args_parser(add_help=False).parse_args(["--slurm", "--gpus-per-node", "0"])
    old = os.environ["PATH"]
    os.environ["PATH"] = env["PATH"]
    try:
        with pytest.raises(Exception, match=rf"data folder not found: {tmp_path}/nowhere/train"):
            L.launch(job, args, job.folder, "pretrain:x")
        teacher = job_for("pretrain", output_root=tmp_path, run="y",
                          overrides=["teacher.backend=local", f"teacher.checkpoint={tmp_path}/t.pth"])
        with pytest.raises(Exception, match=rf"{tmp_path}/t.pth: checkpoint not found"):
            L.launch(teacher, args, teacher.folder, "pretrain:y")
    finally:
        os.environ["PATH"] = old
    assert not log.exists()  # neither sinfo nor sbatch was called


def test_demo_runs_here_when_the_controller_does_not_answer(tmp_path: Path) -> None:
    env = fake_slurm(tmp_path / "bin")
    res = subprocess.run([sys.executable, str(REPO / "pretrain" / "submit.py"), "--dry-run"], capture_output=True,
                         text=True, env=env, timeout=300, check=False)
    assert res.returncode == 0, res.stderr
    assert ("would run pretrain:default on this machine (SLURM's tools are on PATH but no controller answers "
            "(slurm_load_partitions: Unable to contact slurm controller (connect failure)); this demo runs here)"
            ) in res.stdout
    res = subprocess.run([sys.executable, str(REPO / "pretrain" / "submit.py"), "--dry-run", "--slurm"],
                         capture_output=True, text=True, env=env, timeout=300, check=False)
    assert res.returncode == 2 and "Unable to contact slurm controller" in res.stderr
    assert len([ln for ln in res.stderr.splitlines() if ln.startswith("error:")]) == 1
