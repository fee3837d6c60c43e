"""The launcher against a live SLURM cluster: real jobs, requeue, dependencies, arrays, bad input.

Needs ``sinfo``/``sbatch`` and a node that accepts jobs, e.g. the one-node cluster of
``scripts/slurm_cluster.sh start`` (CI starts it); skipped otherwise. Every job is a tiny CPU run
on the demo world (``--gpus-per-node 0 --cpus-per-task 1``); jobs inherit the test session's
environment (``MASKALIGN_DEMO_ROOT``), so they share its demo world and cached teacher.
``MASKALIGN_SLURM_PARTITION`` picks the partition (default: the cluster's default one).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from runfolder_helpers import hold_at

from maskalign import jobs

REPO = Path(__file__).resolve().parents[1]
SUBMIT = str(REPO / "pretrain" / "submit.py")
FAKE = "fake_transfer"  # registers the stand-in task "probe"
JOB_TIMEOUT_S = 420  # per wait; a healthy run of this file takes a few minutes in all
# Small runs: 18 iterations per epoch on the 1200 demo images, no DataLoader workers.
TINY = ("optim.warmup_epochs=1", "data.num_workers=0")


def _cluster_partition() -> str | None:
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return None
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%P|%T"], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    wanted = os.environ.get("MASKALIGN_SLURM_PARTITION")
    for line in out.stdout.splitlines():
        name, _, state = line.partition("|")
        default = name.endswith("*")
        name = name.rstrip("*")
        if state.rstrip("*~#") in ("idle", "mixed", "allocated", "completing") and (
                name == wanted or (wanted is None and default)):
            return name
    return None


PARTITION = _cluster_partition()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(PARTITION is None, reason="no live SLURM cluster here (sinfo/sbatch missing or no usable "
                                                 "partition); start one with: "
                                                 "sudo bash scripts/slurm_cluster.sh start"),
]
CLUSTER = ("--slurm", "--partition", str(PARTITION), "--gpus-per-node", "0", "--cpus-per-task", "1",
           "--time", "20", "--signal-delay-s", "60")


def submit(*argv: str, script: str = SUBMIT, expect_rc: int = 0,
           env: dict[str, str] | None = None) -> tuple[str, list[str]]:
    """Run an entry script; returns its stdout and the SLURM job ids it submitted. ``env`` is added
    to the jobs' environment (a named fault point: ``maskalign.runfolder.faults``)."""
    # the jobs inherit this environment: they import the stand-in tasks' module
    env = {**os.environ, **(env or {}),
           "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), str(REPO), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, script, *argv], capture_output=True, text=True, timeout=300, check=False,
                         env=env)
    assert res.returncode == expect_rc, f"rc {res.returncode}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}"
    ids = re.findall(r"as SLURM job (\d+)", res.stdout)
    array = re.search(r"as SLURM job array (\d+) of (\d+)", res.stdout)
    if array:
        ids += [f"{array.group(1)}_{i}" for i in range(int(array.group(2)))]
    _SUBMITTED.extend(ids)
    return res.stdout + res.stderr, ids


_SUBMITTED: list[str] = []


@pytest.fixture(autouse=True)
def cancel_leftover_jobs():
    """A failed test's jobs must not hold the one-node cluster, where every later test's job would
    wait behind them and fail too: what a test submitted and left running is cancelled after it."""
    first = len(_SUBMITTED)
    yield
    if _SUBMITTED[first:]:
        subprocess.run(["scancel", *_SUBMITTED[first:]], capture_output=True, timeout=20, check=False)


def wait_all(ids: list[str], timeout: float = JOB_TIMEOUT_S) -> dict[str, str]:
    return jobs.wait(ids, timeout=timeout, poll=1.0)


def scontrol(job_id: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", "-o", str(job_id)], capture_output=True, text=True, timeout=20,
                         check=False)
    return dict(re.findall(r"(\w+)=(\S*)", out.stdout))


def jobs_named(name: str) -> list[str]:
    """The ids of every job SLURM holds under ``name``. Tests check what they submitted by name:
    the other live-SLURM files submit jobs of their own meanwhile, on the other xdist worker, so
    comparing all the cluster's jobs before and after raced with them."""
    out = subprocess.run(["squeue", "-h", "-r", "--states=all", "-o", "%i|%j"], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    return [i for i, _, n in (ln.strip().partition("|") for ln in out.splitlines()) if n == name]


def slurm_time(text: str) -> float:
    return time.mktime(time.strptime(text, "%Y-%m-%dT%H:%M:%S"))


def losses(run: Path) -> list[tuple[int, float, int]]:
    rows = [json.loads(ln) for ln in (run / "log.jsonl").read_text().splitlines() if ln.strip()]
    return [(r["epoch"], r["loss"], r["step"]) for r in rows]


def logs_of(run: Path, job_id: str) -> str:
    d = run / "submitit" / job_id
    return "".join(p.read_text(errors="replace") for p in sorted(d.glob("*_log.*")))


def status_rows(root: Path) -> dict[tuple[str, str], dict]:
    out = subprocess.run([sys.executable, "-m", "maskalign.jobs", "status", str(root), "--json"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(ln) for ln in out.stdout.splitlines()]
    return {(r["kind"], r["run"]): r for r in rows}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("slurm_live")


@pytest.fixture(scope="module")
def pretrained(root: Path, full_demo_teacher: Path) -> tuple[Path, str]:
    """A two-epoch pre-training submitted with pretrain/submit.py; (run folder, job id)."""
    out, ids = submit(*CLUSTER, "optim.epochs=2", *TINY, f"output_dir={root}", "name=live")
    assert len(ids) == 1 and "submitted pretrain:live as SLURM job" in out, out
    run = root / "pretrain" / "live"
    assert json.loads((run / "job.json").read_text())["job_id"] == ids[0]
    assert wait_all(ids) == {ids[0]: "COMPLETED"}, logs_of(run, ids[0])
    return run, ids[0]


def test_pretraining_job_runs_on_slurm_and_writes_its_checkpoint(pretrained: tuple[Path, str], root: Path) -> None:
    run, job = pretrained
    for name in ("checkpoint.pth", "encoder.pth", "record.json", "config.yaml", "log.jsonl"):
        assert (run / name).is_file(), name
    assert [e for e, _, _ in losses(run)] == [0, 1]
    log = logs_of(run, job)
    assert f"SLURM job {job} (restart 0), task 0/1" in log and "epoch 2/2" in log
    row = status_rows(root)[("pretrain", "live")]
    assert (row["state"], row["progress"], row["job_id"]) == ("done", "2/2", job)


def test_transfer_job_consumes_the_checkpoint(pretrained: tuple[Path, str], root: Path) -> None:
    script = REPO / "transfer" / "finetune.py"
    if not script.is_file():
        pytest.skip("transfer/finetune.py does not exist yet")
    enc = pretrained[0] / "encoder.pth"
    out, ids = submit("--ckpt", str(enc), *CLUSTER, "optim.epochs=1", "runtime.max_steps=3", "data.num_workers=0",
                      f"output_dir={root}", "name=ft-live", script=str(script))
    assert len(ids) == 1, out
    run = root / "finetune" / "ft-live"
    assert wait_all(ids) == {ids[0]: "COMPLETED"}, logs_of(run, ids[0])
    record = json.loads((run / "record.json").read_text())
    assert record["task"] == "finetune"
    assert Path(record["source_checkpoint"]["path"]) == enc.resolve()


def signal_when_held(ready: Path, run: Path, job: str, command: list[str]) -> None:
    """Once the job, held at a fault point, has written ``ready``: take the file away (the next hold
    writes it again) and run ``command`` (``scancel --signal=USR2``, ``scontrol requeue``)."""
    t_end = time.time() + JOB_TIMEOUT_S
    while not ready.is_file():
        assert time.time() < t_end, f"the job never reached its fault point\n{logs_of(run, job)}"
        assert jobs.job_state(job)[0] not in jobs.TERMINAL, logs_of(run, job)
        time.sleep(0.5)
    ready.unlink()
    subprocess.run([*command, job], check=True, timeout=20)


def test_preempted_job_requeues_and_resumes_to_the_same_losses(root: Path, full_demo_teacher: Path) -> None:
    """Interrupted twice: by USR2, the signal SLURM sends before the time limit (submitit checkpoints
    and requeues), then by ``scontrol requeue`` (SIGTERM, then SIGKILL). The losses of every epoch
    equal those of the same config run without interruption."""
    common = (*CLUSTER, "optim.epochs=4", *TINY, f"output_dir={root}")
    ready = root / "preempted.ready"
    _, straight = submit(*common, "name=straight")
    _, preempted = submit(*common, "name=preempted", env=hold_at("1:4,2:4", ready))
    run, job = root / "pretrain" / "preempted", preempted[0]
    signal_when_held(ready, run, job, ["scancel", "--signal=USR2"])  # epoch 2, after 4 iterations
    signal_when_held(ready, run, job, ["scontrol", "requeue"])  # epoch 3, after 4, in the requeued job
    states = wait_all([*straight, *preempted])
    assert set(states.values()) == {"COMPLETED"}, (states, logs_of(run, job))
    assert int(scontrol(job)["Restarts"]) == 2
    log = logs_of(run, job)
    assert "Caught signal SIGUSR2" in log and "Requeued job" in log and "(restart 2)" in log
    assert "stopped by SIGUSR2 at epoch 2, iteration 4/" in log and "stopped by SIGTERM at epoch 3, iteration 4/" in log
    assert log.count("resumed from") == 2
    a, b = losses(root / "pretrain" / "straight"), losses(run)
    assert [e for e, _, _ in b] == [0, 1, 2, 3]
    assert a == b  # bit-identical on CPU: epoch, loss and step of every epoch


def test_pipeline_runs_dependents_after_pretraining(root: Path, full_demo_teacher: Path) -> None:
    """Pre-training, fine-tuning on its encoder, robustness of the fine-tuned model: three jobs that
    SLURM runs one after the other, each held until the one it consumes has succeeded."""
    for s in ("finetune", "robustness"):
        if not (REPO / "transfer" / f"{s}.py").is_file():
            pytest.skip(f"transfer/{s}.py does not exist yet")
    out, ids = submit(*CLUSTER, "optim.epochs=1", *TINY, f"output_dir={root}", "name=pipe",
                      "--pipeline", "finetune,robustness",
                      "--stage-args", "finetune=optim.epochs=1 runtime.max_steps=3 data.num_workers=0",
                      "--stage-args", "robustness=benchmarks=[in1k] data.num_workers=0")
    assert len(ids) == 3, out
    pre, ft, rob = ids
    assert scontrol(ft)["Dependency"].startswith(f"afterok:{pre}")
    assert scontrol(rob)["Dependency"].startswith(f"afterok:{ft}")
    states = wait_all(ids)
    assert set(states.values()) == {"COMPLETED"}, (states, logs_of(root / "finetune" / "pipe", ft),
                                                   logs_of(root / "robustness" / "pipe", rob))
    enc = root / "pretrain" / "pipe" / "encoder.pth"
    assert slurm_time(scontrol(ft)["StartTime"]) >= slurm_time(scontrol(pre)["EndTime"]) >= int(enc.stat().st_mtime)
    assert slurm_time(scontrol(rob)["StartTime"]) >= slurm_time(scontrol(ft)["EndTime"])
    ft_record = json.loads((root / "finetune" / "pipe" / "record.json").read_text())
    rob_record = json.loads((root / "robustness" / "pipe" / "record.json").read_text())
    assert Path(ft_record["source_checkpoint"]["path"]) == enc.resolve()
    assert rob_record["source_checkpoint"]["path"] == ft_record["checkpoint"]["path"]
    # Each stage's SLURM logs sit beside its outputs, and the status command sees all three.
    assert f"checkpoint {enc}" in logs_of(root / "finetune" / "pipe", ft)
    rows = status_rows(root)
    assert {rows[(k, "pipe")]["state"] for k in ("pretrain", "finetune", "robustness")} == {"done"}


def test_failed_pretraining_cancels_its_dependents(root: Path, full_demo_teacher: Path) -> None:
    # A batch that does not divide over the job's processes: only found inside the job (a missing
    # data root is refused before sbatch, see test_slurm_live_runfolder.py).
    out, ids = submit(*CLUSTER, "optim.epochs=1", *TINY, "optim.total_batch_size=63", "optim.accum_iter=2",
                      f"output_dir={root}", "name=broken", "--pipeline", f"probe={FAKE}")
    assert len(ids) == 2, out
    states = wait_all(ids)
    assert states == {ids[0]: "FAILED", ids[1]: "CANCELLED"}, states
    assert not (root / "probe" / "broken" / "started.json").exists()
    rows = status_rows(root)
    assert rows[("pretrain", "broken")]["state"] == "failed"
    assert "is not divisible by world size 1 x accum_iter 2" in rows[("pretrain", "broken")]["detail"]
    assert rows[("probe", "broken")]["state"] == "cancelled"


def test_sweep_runs_as_a_job_array_with_one_folder_per_run(root: Path, full_demo_teacher: Path) -> None:
    sweep = root / "tiny_sweep.yaml"
    sweep.write_text("base: default\nruns:\n"
                     "  - {name: sw-a, overrides: [mask.ratio=0.5]}\n"
                     "  - {name: sw-b, overrides: [mask.ratio=0.7]}\n"
                     "  - {name: sw-c, overrides: [mask.type=random]}\n")
    out, ids = submit(*CLUSTER, "--sweep", str(sweep), "optim.epochs=1", "runtime.max_steps=3", *TINY,
                      f"output_dir={root}")
    assert len(ids) == 3 and all("_" in i for i in ids), out
    assert set(wait_all(ids).values()) == {"COMPLETED"}
    for job, name, ratio in zip(ids, ("sw-a", "sw-b", "sw-c"), (0.5, 0.7, 0.7)):
        run = root / "pretrain" / name
        assert (run / "encoder.pth").is_file() and (run / "record.json").is_file()
        assert json.loads((run / "job.json").read_text())["job_id"] == job
        assert f"ratio: {ratio}" in (run / "config.yaml").read_text()
        assert (run / "submitit" / job).is_symlink() and f"SLURM job {job}" in logs_of(run, job)
    assert (root / "pretrain" / "sw-c" / "config.yaml").read_text().count("type: random") == 1


def test_two_processes_on_one_node_train_as_one_ddp_job(root: Path, full_demo_teacher: Path) -> None:
    """World size, rank and master come from SLURM's environment; gloo without GPUs."""
    _, ids = submit(*CLUSTER, "--tasks-per-node", "2", "optim.epochs=1", "runtime.max_steps=3", *TINY,
                      f"output_dir={root}", "name=ddp")
    run = root / "pretrain" / "ddp"
    assert wait_all(ids) == {ids[0]: "COMPLETED"}, logs_of(run, ids[0])
    log = logs_of(run, ids[0])
    assert "task 0/2" in log and "task 1/2" in log and "world 2" in log
    assert (run / "encoder.pth").is_file()


@pytest.mark.parametrize("flags,message", [
    (("--partition", "no-such-partition"), "partition 'no-such-partition' does not exist"),
    (("--time", "tomorrow"), "cannot parse time limit 'tomorrow'"),
    (("--cpus-per-task", "4096"), "CPUs per node"),
])
def test_bad_request_is_one_error_and_submits_nothing(root: Path, flags: tuple[str, ...], message: str) -> None:
    earlier = set(jobs_named("pretrain:bad"))  # the cluster remembers finished jobs for a while
    cluster = list(CLUSTER)
    for flag, value in zip(flags[::2], flags[1::2]):
        cluster[cluster.index(flag) + 1] = value
    out, ids = submit(*cluster, f"output_dir={root}", "name=bad", expect_rc=2)
    errors = [ln for ln in out.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], out
    assert "Traceback" not in out and not ids
    assert not set(jobs_named("pretrain:bad")) - earlier
    assert not (root / "pretrain" / "bad").exists()
