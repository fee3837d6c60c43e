"""Two processes (gloo, CPU), one of them signalled: both stop at the same step with one
mid-epoch checkpoint, and the resumed run ends bit for bit where an uninterrupted one does.

The signal reaches rank 1 only (``MASKALIGN_FAULT_RANK=1``, a named step, no timing); rank 0
learns of it through the stop agreement at the next iteration boundary.
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
from transfer_helpers import mini_imagenet

REPO = Path(__file__).resolve().parents[1]
SUBMIT = str(REPO / "pretrain" / "submit.py")
# 80 images, total batch 32: 2 optimizer steps per epoch, 3 epochs; deterministic step.
RUN = ("data.dataset=imagenet", "optim.total_batch_size=32", "optim.epochs=3", "optim.warmup_epochs=1",
       "student.drop_path=0", "mask.deterministic=true", "data.num_workers=0")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mini(tmp_path_factory: pytest.TempPathFactory, full_demo_teacher: Path) -> Path:
    from maskalign.data.demo_world import ensure_imagenet

    return mini_imagenet(ensure_imagenet(), tmp_path_factory.mktemp("mps") / "imagenet", train=8, val=1)


def _torchrun(out: Path, mini: Path, name: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    torchrun = shutil.which("torchrun") or ""
    cmd = ([torchrun] if torchrun else [sys.executable, "-m", "torch.distributed.run"])
    return subprocess.run([*cmd, "--nproc_per_node", "2", "--master_port", "29631", SUBMIT, "--", "--local", *RUN,
                           f"data.root={mini}", f"output_dir={out}", f"name={name}"],
                          capture_output=True, text=True, timeout=600, check=False,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


def _curve(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]


def test_one_rank_signalled_stops_both_and_resumes_bit_identical(tmp_path: Path, mini: Path) -> None:
    from maskalign.checkpoint import load_file

    ref = _torchrun(tmp_path, mini, "straight")
    assert ref.returncode == 0, ref.stdout[-3000:] + ref.stderr[-3000:]

    run = tmp_path / "pretrain" / "r"
    stopped = _torchrun(tmp_path, mini, "r", {"MASKALIGN_FAULT_AT": "1:1", "MASKALIGN_FAULT": "USR2",
                                              "MASKALIGN_FAULT_RANK": "1"})
    assert stopped.returncode != 0  # both ranks exited 128 + USR2 (a rank left behind would hang: timeout)
    assert "stopped by SIGUSR2 at epoch 2, iteration 1/2" in stopped.stdout, stopped.stdout[-3000:]
    ckpt = load_file(run / "checkpoint.pth")
    assert (ckpt["epoch"], ckpt["iter_in_epoch"], ckpt["step"]) == (1, 1, 3)
    assert len(ckpt["accum"]["per_rank"]) == 2
    assert not (run / "record.json").exists() and not (run / "run.lock").exists()

    resumed = _torchrun(tmp_path, mini, "r")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout and "at epoch 1, iteration 1/2" in resumed.stdout
    want = [{k: v for k, v in e.items() if k not in ("sec_per_iter", "images_per_s")}
            for e in _curve(tmp_path / "pretrain" / "straight")]
    got = [{k: v for k, v in e.items() if k not in ("sec_per_iter", "images_per_s")} for e in _curve(run)]
    assert got == want  # every logged number equal, not approximately
    a = torch.load(tmp_path / "pretrain" / "straight" / "encoder.pth", weights_only=True)
    b = torch.load(run / "encoder.pth", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
