"""Without SLURM the entry points run their jobs here, pipeline included, and say so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FAKE = "fake_transfer"  # registers the stand-in task "probe"

pytestmark = pytest.mark.slow


def test_same_command_runs_here_without_sbatch(tmp_path: Path, full_demo_teacher: Path) -> None:
    # no sbatch; the stand-in tasks' module on the path
    env = {**os.environ, "PATH": str(Path(sys.executable).parent),
           "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), str(REPO)])}
    res = subprocess.run([sys.executable, str(REPO / "pretrain" / "submit.py"), "optim.epochs=1", "runtime.max_steps=2",
                          "data.num_workers=0", f"output_dir={tmp_path}", "name=here", "--partition", "whatever",
                          "--pipeline", f"probe={FAKE}", "--stage-args", "probe=score=2"],
                         capture_output=True, text=True, env=env, timeout=900, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "[launcher] no SLURM here (no sbatch on PATH): running pretrain:here on this machine" in res.stdout
    assert "[launcher] no SLURM here (no sbatch on PATH): running probe:here on this machine" in res.stdout
    assert "probe/here: done" in res.stdout
    assert (tmp_path / "pretrain" / "here" / "encoder.pth").is_file()
    started = json.loads((tmp_path / "probe" / "here" / "started.json").read_text())
    assert started["local"] and started["slurm_job_id"] is None
    assert started["ckpt"] == str(tmp_path / "pretrain" / "here" / "encoder.pth")
    assert not (tmp_path / "pretrain" / "here" / "job.json").exists()  # nothing was submitted
