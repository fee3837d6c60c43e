"""Two processes (gloo, CPU) train as one: the same loss curve as one process at the same total
batch, one record and one checkpoint, and a resume into another world size.

What makes the curves equal (maskalign/data/keyed.py): ``DistributedSampler`` gives rank ``r`` every
``world``-th index of one permutation, so each global batch holds the images of the 1-process
batch; each image's crop comes from its own (seed, epoch, index) seed, not from whichever process
or worker loads it; DDP averages the ranks' gradients of per-rank mean losses, i.e. the gradient of
the global mean. Masks and drop path draw from per-rank streams (``seed + rank``, as MAE and DINOv2
seed them), so the comparison runs with deterministic (top-k attentive) masking and no drop path:
with random masks two processes follow the same distribution, not the same numbers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import pretrain_cfg
from torch.utils.data import DistributedSampler
from transfer_helpers import mini_imagenet

from maskalign.data.keyed import EpochKeys

REPO = Path(__file__).resolve().parents[1]
SUBMIT = str(REPO / "pretrain" / "submit.py")
# 80 images, total batch 32: 2 optimizer steps per epoch, 3 epochs; deterministic step.
RUN = ("data.dataset=imagenet", "optim.total_batch_size=32", "optim.epochs=3", "optim.warmup_epochs=1",
       "student.drop_path=0", "mask.deterministic=true", "data.num_workers=0")


def _curve(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]


def _assert_same_curve(got: list[dict], want: list[dict]) -> None:
    assert [e["epoch"] for e in got] == [e["epoch"] for e in want]
    assert [e["step"] for e in got] == [e["step"] for e in want]
    for a, b in zip(got, want):
        for key in ("loss", "align_loss", "lr"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), (key, a, b)


def _assert_single_writer(run: Path, epochs: int, sessions: int = 1) -> None:
    assert len(list(run.rglob("record.json"))) == 1
    assert [p.name for p in run.glob("checkpoint*.pth")] == ["checkpoint.pth"]
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == sessions  # rank 0's only
    assert len(_curve(run)) == epochs


def test_ranks_together_take_the_one_process_batch() -> None:
    """Rank r's k-th batch, united over ranks, is the 1-process k-th batch: expected from the
    permutation DistributedSampler documents (randperm under generator seed + epoch)."""
    n, total, world, seed, epoch = 50, 8, 2, 3, 4
    g = torch.Generator().manual_seed(seed + epoch)
    perm = torch.randperm(n, generator=g).tolist()
    per = total // world
    shards = []
    for r in range(world):
        keys = EpochKeys(DistributedSampler(range(n), num_replicas=world, rank=r, shuffle=True, seed=seed,
                                            drop_last=True))
        keys.set_epoch(epoch)
        shards.append(list(keys))
    assert all(e == epoch for s in shards for e, _ in s)
    for k in range(n // total):
        united = sorted(i for s in shards for _, i in s[k * per:(k + 1) * per])
        assert united == sorted(perm[k * total:(k + 1) * total])


@pytest.fixture(scope="module")
def mini(tmp_path_factory: pytest.TempPathFactory, full_demo_imagenet: Path) -> Path:
    return mini_imagenet(full_demo_imagenet, tmp_path_factory.mktemp("mp") / "imagenet", train=8, val=1)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory, mini: Path, full_demo_teacher: Path) -> list[dict]:
    from maskalign.engine.pretrain import train

    out = tmp_path_factory.mktemp("one")
    train(pretrain_cfg(out, *RUN, f"data.root={mini}", "name=ref"))
    return _curve(out / "pretrain" / "ref")


def _torchrun(out: Path, mini: Path, *extra: str) -> str:
    torchrun = shutil.which("torchrun") or ""
    cmd = ([torchrun] if torchrun else [sys.executable, "-m", "torch.distributed.run"])
    res = subprocess.run([*cmd, "--nproc_per_node", "2", "--master_port", "29617", SUBMIT, "--", "--local", *RUN,
                          f"data.root={mini}", f"output_dir={out}", *extra],
                         capture_output=True, text=True, timeout=300, env=dict(os.environ), check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res.stdout + res.stderr


@pytest.mark.slow
def test_torchrun_two_processes_equal_one_process(tmp_path: Path, mini: Path, one_process: list[dict]) -> None:
    # One DataLoader worker per rank against none in the reference: the images' crops do not
    # depend on who loads them.
    log = _torchrun(tmp_path, mini, "name=two", "data.num_workers=1")
    run = tmp_path / "pretrain" / "two"
    assert "world 2" in log and "per process 16" in log
    _assert_same_curve(_curve(run), one_process)
    _assert_single_writer(run, epochs=3)


@pytest.mark.slow
def test_resume_from_two_processes_into_one(tmp_path: Path, mini: Path, one_process: list[dict]) -> None:
    from maskalign.engine.pretrain import train

    _torchrun(tmp_path, mini, "name=resize", "runtime.max_steps=4")  # 2 of 3 epochs on 2 processes
    run = tmp_path / "pretrain" / "resize"
    assert len(_curve(run)) == 2
    train(pretrain_cfg(tmp_path, *RUN, f"data.root={mini}", "name=resize"))  # the last one on 1
    _assert_same_curve(_curve(run), one_process)
    _assert_single_writer(run, epochs=3, sessions=2)


@pytest.mark.slow
def test_two_slurm_tasks_equal_one_process(tmp_path: Path, mini: Path, one_process: list[dict]) -> None:
    import test_slurm_live as live

    if live.PARTITION is None:
        pytest.skip("no live SLURM cluster here (sinfo/sbatch missing or no usable partition)")
    _, ids = live.submit("--slurm", "--partition", live.PARTITION, "--nodes", "1", "--gpus-per-node", "0",
                         "--tasks-per-node", "2", "--cpus-per-task", "1", "--time", "20", *RUN,
                         f"data.root={mini}", f"output_dir={tmp_path}", "name=slurm2")
    run = tmp_path / "pretrain" / "slurm2"
    assert live.wait_all(ids) == {ids[0]: "COMPLETED"}, live.logs_of(run, ids[0])
    assert "world 2" in live.logs_of(run, ids[0])
    _assert_same_curve(_curve(run), one_process)
    _assert_single_writer(run, epochs=3)
