"""Run-folder rules on a live SLURM cluster: a second submission of a running run is refused before
sbatch, a bad data root is refused before sbatch, and a job preempted by USR2 (``scancel
--signal=USR2``, as SLURM does before a time limit) checkpoints mid-epoch, is requeued under the
same job id and resumes to the losses of an uninterrupted run, bit for bit.

Skipped without a usable cluster (see tests/test_slurm_live.py, whose helpers this reuses).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from runfolder_helpers import hold_at, tiny_imagenet, tiny_run_args
from test_slurm_live import (
    CLUSTER,
    JOB_TIMEOUT_S,
    PARTITION,
    cancel_leftover_jobs,  # noqa: F401  (autouse here too)
    jobs_named,
    logs_of,
    signal_when_held,
    status_rows,
    submit,
    wait_all,
)

from maskalign.checkpoint import load_file

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(PARTITION is None, reason="no live SLURM cluster here (sinfo/sbatch missing or no usable "
                                                 "partition); start one with: "
                                                 "sudo bash scripts/slurm_cluster.sh start"),
]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, full_demo_teacher: Path) -> Path:
    return tiny_imagenet(tmp_path_factory.mktemp("tiny_imagenet"), per_class=8)


def _losses(run: Path) -> list[tuple[int, float, int]]:
    return [(r["epoch"], r["loss"], r["step"]) for r in map(json.loads, (run / "log.jsonl").read_text().splitlines())]


def test_second_submission_and_bad_data_root_are_refused_before_sbatch(data: Path, tmp_path: Path) -> None:
    args = tiny_run_args(data, tmp_path, "twice", "optim.epochs=1", "data.num_workers=0")
    earlier = set(jobs_named("pretrain:twice")) | set(jobs_named("pretrain:nodata"))  # earlier runs' jobs, still listed
    out, ids = submit(*CLUSTER, *args, "--sbatch", "hold")  # held (sbatch --hold): pending until cancelled
    assert len(ids) == 1, out
    try:
        out2, ids2 = submit(*CLUSTER, *args, expect_rc=2)
        errors = [ln for ln in out2.splitlines() if ln.startswith("error:")]
        assert errors == [(f"error: {tmp_path}/pretrain/twice: SLURM job {ids[0]} of this run is pending already; "
                           f"wait for it or scancel {ids[0]} before submitting again")], out2
        assert not ids2 and set(jobs_named("pretrain:twice")) - earlier == set(ids)  # the held one only
        bad = tiny_run_args(tmp_path / "no-data", tmp_path, "nodata")
        out3, ids3 = submit(*CLUSTER, *bad, expect_rc=2)
        assert [ln for ln in out3.splitlines() if ln.startswith("error:")] == [
            f"error: data folder not found: {tmp_path}/no-data/train (expected <root>/train/<class>/<image>.JPEG)"]
        assert not ids3 and not set(jobs_named("pretrain:nodata")) - earlier
        assert not (tmp_path / "pretrain" / "nodata").exists()
    finally:
        subprocess.run(["scancel", ids[0]], check=False, timeout=20)
    wait_all(ids)
    row = status_rows(tmp_path)[("pretrain", "twice")]
    assert row["state"] == "cancelled", row


def test_usr2_checkpoints_mid_epoch_and_the_requeued_job_resumes_bit_identical(data: Path, tmp_path: Path) -> None:
    common = tiny_run_args(data, tmp_path, "x", "optim.epochs=2", "data.num_workers=2", "runtime.log_every=1")
    _, straight = submit(*CLUSTER, *[a.replace("name=x", "name=straight") for a in common])
    ready = tmp_path / "x.ready"
    _, (job,) = submit(*CLUSTER, *common, env=hold_at("0:5", ready))
    run = tmp_path / "pretrain" / "x"
    # Held after 5 of epoch 1's 20 iterations, with its two DataLoader workers running: the
    # signal reaches every process of the job, and the stop is taken at that iteration boundary.
    signal_when_held(ready, run, job, ["scancel", "--signal=USR2"])
    t_end = time.time() + JOB_TIMEOUT_S
    while "(restart 1)" not in logs_of(run, job):
        assert time.time() < t_end, logs_of(run, job)
        time.sleep(0.5)
    states = wait_all([*straight, job])
    assert set(states.values()) == {"COMPLETED"}, (states, logs_of(run, job))
    log = logs_of(run, job)
    assert "stopped by SIGUSR2 at epoch 1, iteration 5/20" in log and "Requeued job" in log
    assert "resumed from" in log and ", iteration " in log.split("resumed from", 1)[1].splitlines()[0]
    assert "Traceback" not in log
    assert _losses(run) == _losses(tmp_path / "pretrain" / "straight")
    events = [e["event"] for e in map(json.loads, (run / "status.jsonl").read_text().splitlines())]
    assert events == ["submitted", "started", "stopped", "started", "finished"]
    assert load_file(run / "checkpoint.pth")["iter_in_epoch"] == 0
