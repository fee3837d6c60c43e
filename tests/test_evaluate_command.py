"""``transfer/evaluate.py``: two encoders x three protocols in one command, one table with both rows.

Slow: six short runs on the demo world, on this machine; then (where a live SLURM cluster answers,
as in tests/test_slurm_live.py) the same as a DAG of SLURM jobs, robustness after its fine-tune.
Running the command again runs nothing that is done.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import encoder_formats as fmts
import pytest
from transfer_helpers import DEMO_C_PER_CLASS, DEMO_PER_CLASS

from maskalign.records import read_record

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
SHORT = "optim.epochs=1 optim.warmup_epochs=0 runtime.max_steps=2 data.num_workers=0"
STAGES = ("--stage-args", f"finetune={SHORT}", "--stage-args", f"linprobe={SHORT}", "--stage-args",
          f"robustness=data.demo_per_class={DEMO_PER_CLASS} data.demo_c_per_class={DEMO_C_PER_CLASS} "
          "data.num_workers=0")


def _evaluate(root: Path, specs: list[str], *extra: str) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), str(REPO),
                                                         os.environ.get("PYTHONPATH", "")])}
    argv = [sys.executable, str(REPO / "transfer" / "evaluate.py"), "--output-dir", str(root), *STAGES, *extra]
    for s in specs:
        argv += ["--ckpt", s]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False, env=env)
    assert res.returncode == 0, f"stdout:\n{res.stdout[-4000:]}\nstderr:\n{res.stderr[-4000:]}"
    return res.stdout


@pytest.fixture(scope="module")
def specs(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    folder = tmp_path_factory.mktemp("encoders")  # both files in one folder
    return [fmts.demo_sized(folder, "deit3"), fmts.demo_sized(folder, "clip")]


def _check_tables(root: Path) -> None:
    import pandas as pd

    t1 = pd.read_csv(root / "tables" / "table1.csv", dtype=str, keep_default_na=False)
    ours = t1[(t1["Source"] == "ours") & (t1["Run"] != "—")].set_index("Method")
    assert sorted(ours.index) == ["CLIP (clip_openai.pt)", "DeiT III (deit3.pth)"]
    for method, run in (("DeiT III (deit3.pth)", "deit3-default"), ("CLIP (clip_openai.pt)", "clip_openai-default")):
        ft = read_record(root / "finetune" / run / "record.json")
        lp = read_record(root / "linprobe" / run / "record.json")
        assert ours.loc[method, "FT Acc."] == f"{ft.metrics['top1']:.1f}"
        assert ours.loc[method, "LP Acc."] == f"{lp.metrics['top1']:.1f}"
        assert (root / "robustness" / run / "record.json").is_file()
    rob = pd.read_csv(root / "tables" / "robustness.csv", dtype=str, keep_default_na=False)
    assert {"CLIP (clip_openai.pt)", "DeiT III (deit3.pth)"} <= set(rob["Method"])


def test_two_encoders_three_protocols_on_this_machine(specs: list[str], tmp_path: Path) -> None:
    out = _evaluate(tmp_path, specs, "--local")
    assert "2 encoders, 6 runs to do" in out, out
    _check_tables(tmp_path)
    again = _evaluate(tmp_path, specs, "--local")
    assert "2 encoders, 0 runs to do" in again and again.count("done already") == 6, again


def _partition() -> str | None:
    from test_slurm_live import PARTITION

    return PARTITION


@pytest.mark.skipif(_partition() is None, reason="no live SLURM cluster here (see tests/test_slurm_live.py)")
def test_two_encoders_three_protocols_as_a_slurm_dag(specs: list[str], tmp_path: Path) -> None:
    from maskalign import jobs

    cluster = ("--slurm", "--partition", str(_partition()), "--gpus-per-node", "0", "--cpus-per-task", "1",
               "--time", "20")
    out = _evaluate(tmp_path, specs, *cluster)
    ids = re.findall(r"submitted job (\d+)", out)
    assert len(ids) == 6 and out.count("after afterok:") == 2, out  # robustness waits for its fine-tune
    assert set(jobs.wait(ids, timeout=900, poll=1.0).values()) == {"COMPLETED"}
    again = _evaluate(tmp_path, specs, "--local")  # nothing left to run: only the tables
    assert "0 runs to do" in again, again
    _check_tables(tmp_path)
