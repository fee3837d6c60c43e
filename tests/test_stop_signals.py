"""Stops are honoured everywhere: outside the step loop TERM/INT end the job at once, a second
signal always does, children never inherit the job's handlers, a stuck worker pool cannot hold a
stopped job, and a diverging run stops at its first non-finite loss writing nothing.

Every test reaches its moment through a named fault-injection point (``maskalign.runfolder.faults``)
or a file the process writes, never through timing.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from runfolder_helpers import REPO, SUBMIT, hold_at, run_submit, tiny_imagenet, tiny_run_args


def _wait_for(pred, proc: subprocess.Popen, timeout: float = 600) -> None:
    """Wait for a state the process reaches by itself (a file it writes), never for a moment in time."""
    t_end = time.monotonic() + timeout
    while not pred():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < t_end, "the process never reached the awaited state"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead: its parent has not reaped it yet
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def handler():
    from maskalign.runfolder import preempt

    restore = preempt.install_handler()
    yield preempt
    restore()


def _deliver(signum: int) -> None:
    os.kill(os.getpid(), signum)
    for _ in range(100):  # Python runs the handler at the next bytecode boundary of the main thread
        time.sleep(0)


def test_term_outside_the_loop_ends_at_once(handler) -> None:
    with pytest.raises(handler.Stopped) as e:
        _deliver(signal.SIGTERM)
    assert e.value.code == 128 + signal.SIGTERM and e.value.immediate


def test_int_outside_the_loop_ends_at_once(handler) -> None:
    with pytest.raises(handler.Stopped) as e:
        _deliver(signal.SIGINT)
    assert e.value.code == 128 + signal.SIGINT


def test_in_the_loop_a_signal_sets_the_flag_and_a_second_one_ends(handler) -> None:
    handler.enter_step_loop()
    _deliver(signal.SIGTERM)
    assert handler.stop_requested() == signal.SIGTERM
    with pytest.raises(handler.Stopped) as e:
        _deliver(signal.SIGUSR2)
    assert e.value.code == 128 + signal.SIGUSR2 and e.value.immediate


def _kill_self() -> None:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)  # never reached when TERM has its default action
    sys.exit(0)


def test_forked_child_does_not_inherit_the_handler(handler) -> None:
    child = multiprocessing.get_context("fork").Process(target=_kill_self)
    child.start()
    child.join(timeout=60)
    assert child.exitcode == -signal.SIGTERM
    assert handler.stop_requested() is None  # and the parent did not take the child's signal for its own


def _usr2_then_quiet(worker_id: int) -> None:
    """SLURM's warning lands in a DataLoader worker before its ``worker_init_fn`` has quieted it."""
    from maskalign.runfolder.preempt import quiet_worker

    os.kill(os.getpid(), signal.SIGUSR2)
    quiet_worker(worker_id)


def test_usr2_as_workers_start_does_not_kill_them(handler) -> None:
    """USR2 goes to every process of a SLURM job; one that reached a worker as an epoch started
    killed it ("DataLoader worker is killed by signal: User defined signal 2") and failed the job."""
    import torch

    loader = torch.utils.data.DataLoader(torch.arange(16), batch_size=4, num_workers=2,
                                         worker_init_fn=_usr2_then_quiet,
                                         multiprocessing_context=multiprocessing.get_context("fork"))
    assert torch.cat(list(loader)).tolist() == list(range(16))
    assert handler.stop_requested() is None  # the workers' signals were not the main process's


def _usr2_through_the_inherited_handler() -> None:
    from maskalign.runfolder import preempt

    preempt._on_signal(signal.SIGUSR2, None)  # as if it landed between fork and the at-fork hook
    sys.exit(0)


def test_a_child_ignores_usr2_even_through_the_inherited_handler(handler) -> None:
    child = multiprocessing.get_context("fork").Process(target=_usr2_through_the_inherited_handler)
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0


def test_a_loop_that_raises_with_quiet_workers_still_exits(tmp_path: Path) -> None:
    """The workers ignore TERM, so ``multiprocessing``'s exit hook (TERM, then join) waited for them
    forever when the loop raised (a non-finite loss, a bad image): on SLURM the job held its node
    until its time limit. The process ends with the error and takes its workers along."""
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(f"""
        import os, torch
        from maskalign.runfolder.preempt import install_handler, quiet_worker
        if __name__ == "__main__":
            install_handler()
            loader = torch.utils.data.DataLoader(torch.arange(64), batch_size=2, num_workers=2,
                                                 worker_init_fn=quiet_worker)
            it = iter(loader)
            next(it)
            open({str(tmp_path / "workers")!r}, "w").write(" ".join(str(w.pid) for w in it._workers))
            raise RuntimeError("the loop failed")
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    _, err = proc.communicate(timeout=120)  # a bound, not a timing assertion: before, it never ended
    assert proc.returncode == 1 and err.rstrip().endswith("RuntimeError: the loop failed"), err
    workers = [int(w) for w in (tmp_path / "workers").read_text().split()]
    assert len(workers) == 2 and not any(_alive(w) for w in workers)


def test_the_requeue_command_outlives_the_term_that_the_requeue_sends(handler) -> None:
    """submitit requeues with ``scontrol requeue``, and the requeue sends TERM to every process of
    the job: on a loaded machine it reached scontrol before it exited, and the requeue that had
    worked was recorded as a failure. Here the command receives that TERM while it runs."""
    outcome = []

    def submitit_handler(signum: int, frame: object) -> None:  # what submitit's does, in short
        res = subprocess.run([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGTERM); "
                              "print('requeued')"], capture_output=True, text=True, timeout=120, check=False)
        outcome.append((res.returncode, res.stdout.strip()))
        sys.exit(0)

    handler.restore()
    previous = {s: signal.getsignal(s) for s in handler.SIGNALS}
    signal.signal(signal.SIGUSR2, submitit_handler)
    try:
        handler.install_handler()
        handler.request_stop(signal.SIGUSR2)
        with pytest.raises(SystemExit):
            handler.stop_now("checkpointed")
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    assert outcome == [(0, "requeued")]


def test_stuck_demo_world_worker_cannot_hold_a_stopped_job(tmp_path: Path) -> None:
    """TERM to a job whose builder pool has a stuck worker: the job ends, its workers with it."""
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO / 'tests')!r})
        from stuck_worker import stuck
        from maskalign.data.demo_world import parallel_map
        from maskalign.runfolder.preempt import install_handler
        if __name__ == "__main__":
            install_handler()
            parallel_map(stuck, [({str(tmp_path)!r}, i) for i in range(200)])
    """))
    env = {**os.environ, "PYTHONPATH": str(REPO), "MASKALIGN_DEMO_WORKERS": "2"}
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    _wait_for(lambda: len(list(tmp_path.glob("worker-*"))) == 2, proc)
    workers = [int(p.name.split("-")[1]) for p in tmp_path.glob("worker-*")]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)  # a bound, not a timing assertion: before, it never ended
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err, err
    t_end = time.monotonic() + 60
    while any(_alive(w) for w in workers) and time.monotonic() < t_end:
        time.sleep(0.05)
    assert not any(_alive(w) for w in workers)


# ----- whole pre-training jobs (seconds each on the tiny data set) -----

@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, full_demo_teacher: Path) -> Path:
    return tiny_imagenet(tmp_path_factory.mktemp("tiny_imagenet"))


def _start(data: Path, out: Path, env: dict[str, str], *extra: str) -> subprocess.Popen:
    args = tiny_run_args(data, out, "r", "data.num_workers=2", *extra)
    return subprocess.Popen([sys.executable, SUBMIT, "--local", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO), **env})


def _errors(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.strip() and not re.match(r"^\s*epoch \d+/\d+:", ln)]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_before_the_loop_ends_the_job(data: Path, tmp_path: Path, sig: int) -> None:
    """Held at the start (before the teacher, the data set, a demo world), the job ends on the
    signal: nothing written, the lock released, one line; before, it ran on to the first step."""
    held, run = tmp_path / "held", tmp_path / "pretrain" / "r"
    proc = _start(data, tmp_path, hold_at("start", held))
    _wait_for(held.is_file, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err
    name = signal.Signals(sig).name
    assert _errors(err) == [f"[pretrain] stopped by {name} before or after the training steps; "
                            "the last checkpoint is kept"], err
    assert not (run / "checkpoint.pth").exists() and not (run / "run.lock").exists()
    events = [json.loads(ln) for ln in (run / "status.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events] == ["started", "stopped"] and events[1]["signal"] == name


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.mark.slow
def test_diverging_run_stops_at_the_first_non_finite_step(data: Path, tmp_path: Path) -> None:
    from maskalign.checkpoint import load_file

    run = tmp_path / "pretrain" / "r"
    # epoch 2 (0-based 1), its third iteration's loss is NaN; with DataLoader workers, which once
    # kept the failed process from exiting
    res = run_submit("--local", *tiny_run_args(data, tmp_path, "r", "data.num_workers=2"),
                     env={**os.environ, "PYTHONPATH": str(REPO), "MASKALIGN_FAULT_AT": "1:2",
                          "MASKALIGN_FAULT": "nan"})
    assert res.returncode == 2, res.stderr
    assert _errors(res.stderr) == [
        f"error: [pretrain] loss became nan at step 13 (epoch 2, iteration 3/10); nothing of this step was written, "
        f"the last checkpoint in {run} is kept; lower optim.blr or enable optim.clip_grad"]
    ckpt = load_file(run / "checkpoint.pth")
    assert (ckpt["epoch"], ckpt["iter_in_epoch"], ckpt["step"]) == (1, 0, 10)
    assert not (run / "record.json").exists() and not (run / "encoder.pth").exists()
    events = [json.loads(ln)["event"] for ln in (run / "status.jsonl").read_text().splitlines()]
    assert events == ["started", "failed"]


@pytest.mark.slow
def test_signal_during_a_diverging_run_writes_nothing(data: Path, tmp_path: Path) -> None:
    """USR2 lands between two accumulation steps; the next loss is NaN: the job stops on the NaN,
    and the stop checkpoint, which would hold NaN weights, is never written."""
    from maskalign.checkpoint import load_file

    run = tmp_path / "pretrain" / "r"
    res = run_submit("--local", *tiny_run_args(data, tmp_path, "r", "data.num_workers=0", "optim.accum_iter=2",
                                               "optim.total_batch_size=8", "optim.epochs=2"),
                     env={**os.environ, "PYTHONPATH": str(REPO), "MASKALIGN_FAULT_AT": "1:1,1:1",
                          "MASKALIGN_FAULT": "USR2,nan"})
    assert res.returncode == 2, res.stderr
    assert "loss became nan at step" in res.stderr and "(epoch 2, iteration 2/" in res.stderr, res.stderr
    before = _sha(run / "checkpoint.pth")
    ckpt = load_file(run / "checkpoint.pth")
    assert (ckpt["epoch"], ckpt["iter_in_epoch"]) == (1, 0)
    import torch

    assert all(bool(torch.isfinite(v).all()) for v in ckpt["model"].values() if v.is_floating_point())
    assert _sha(run / "checkpoint.pth") == before
