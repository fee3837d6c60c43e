"""No file a job is given runs code: pickles, payloads and TorchScript archives are refused in one line.

Each file would leave a trace if opened the unsafe way (``unsafe_files``): the payloads create a
marker file, the TorchScript archive prints a sentinel. Every loader and every job that takes a
file gets all three in process; each job's script, a process of its own (seconds of imports each),
gets one kind per file it takes, the kinds taking turns over the jobs. The marker never appears, the
sentinel is never printed, the error is one line naming the file and never advises
``weights_only=False``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, pretrain_cfg
from unsafe_files import SCRIPT_SENTINEL, pickle_payload, torch_payload, torchscript_archive

from maskalign.errors import UserError

KINDS = ("pickle", "torch_payload", "torchscript")


def _make(kind: str, folder: Path, name: str | None = None) -> tuple[Path, Path]:
    """(the file, the marker it would create)."""
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / f"MARKER-{kind}"
    if kind == "pickle":
        return pickle_payload(folder / (name or "weights.pkl"), marker), marker
    if kind == "torch_payload":
        return torch_payload(folder / (name or "weights.pth"), marker), marker
    return torchscript_archive(folder / (name or "weights.pt")), marker


def _check_refusal(message: str, path: Path, marker: Path) -> None:
    assert not marker.exists(), "the payload ran"
    assert len(message.strip().splitlines()) == 1, message
    assert str(path) in message, message
    assert "weights_only=False" not in message and "weights_only" not in message, message
    assert "refused" in message or "not a readable checkpoint" in message, message


def _sanity_the_payloads_work(tmp_path: Path) -> None:
    import pickle

    f, marker = _make("pickle", tmp_path / "sanity")
    pickle.loads(f.read_bytes())
    assert marker.exists()  # the test files are real: opened the unsafe way, they do create the marker
    marker.unlink()


@pytest.mark.parametrize("kind", KINDS)
def test_the_one_loader_refuses(tmp_path: Path, kind: str, capfd: pytest.CaptureFixture[str]) -> None:
    from maskalign.safe_load import load_weights

    _sanity_the_payloads_work(tmp_path)
    f, marker = _make(kind, tmp_path)
    with pytest.raises(UserError) as e:
        load_weights(f)
    _check_refusal(str(e.value), f, marker)
    assert SCRIPT_SENTINEL not in capfd.readouterr().out


@pytest.mark.parametrize("kind", KINDS)
def test_every_in_process_loader_refuses(tmp_path: Path, kind: str, capfd: pytest.CaptureFixture[str]) -> None:
    """Pre-training checkpoints, encoders (--ckpt of every transfer job), mmengine's checkpoints."""
    from maskalign.checkpoint import load_encoder_state, load_file
    from maskalign.encoders.convert import read_checkpoint
    from maskalign.segmentation.compat import load_from_local_weights_only

    f, marker = _make(kind, tmp_path)
    for loader in (load_file, load_encoder_state, read_checkpoint, load_from_local_weights_only):
        with pytest.raises(UserError) as e:
            loader(f)
        _check_refusal(str(e.value), f, marker)
    assert SCRIPT_SENTINEL not in capfd.readouterr().out


def test_mmengine_allowlist_has_no_getattr() -> None:
    from maskalign.segmentation.compat import checkpoint_safe_globals

    assert getattr not in checkpoint_safe_globals()


def test_mmengine_checkpoint_with_a_history_buffer_still_loads(tmp_path: Path) -> None:
    from mmengine.logging.history_buffer import HistoryBuffer

    from maskalign.segmentation.compat import load_from_local_weights_only

    buf = HistoryBuffer()
    buf.update(2.0)
    buf.update(4.0)
    torch.save({"state_dict": {"w": torch.ones(2)}, "message_hub": {"log_scalars": {"loss": buf}}}, tmp_path / "i.pth")
    back = load_from_local_weights_only(str(tmp_path / "i.pth"))["message_hub"]["log_scalars"]["loss"]
    assert back.mean() == 3.0 and back.max() == 4.0


def test_mmengine_getattr_reaches_nothing_else(tmp_path: Path) -> None:
    from mmengine.logging.history_buffer import HistoryBuffer

    from maskalign.segmentation.compat import load_from_local_weights_only

    class Reach:  # HistoryBuffer is allowed; its __init__ (and from there its globals) must not be reachable
        def __reduce__(self):
            return (getattr, (HistoryBuffer, "__init__"))

    torch.save({"x": Reach()}, tmp_path / "r.pth")
    with pytest.raises(UserError, match="r.pth"):
        load_from_local_weights_only(str(tmp_path / "r.pth"))


@pytest.mark.parametrize("kind", KINDS)
def test_detectron2_weights_and_last_checkpoint(tmp_path: Path, kind: str, capfd: pytest.CaptureFixture[str]) -> None:
    """COCO's --weights and a run folder's ``last_checkpoint`` go through the same loader."""
    from coco_helpers import require_detectron2

    require_detectron2()
    from maskalign.detection.checkpointer import SafeDetectionCheckpointer

    f, marker = _make(kind, tmp_path / "elsewhere")
    model = torch.nn.Linear(2, 2)
    with pytest.raises(UserError) as e:
        SafeDetectionCheckpointer(model, str(tmp_path / "run")).load(str(f))
    _check_refusal(str(e.value), f, marker)
    run = tmp_path / "run"
    run.mkdir()
    (run / "last_checkpoint").write_text(str(f))
    with pytest.raises(UserError) as e:
        SafeDetectionCheckpointer(model, str(run)).resume_or_load("", resume=True)
    _check_refusal(str(e.value), f, marker)
    assert SCRIPT_SENTINEL not in capfd.readouterr().out
    # a file of tensors still loads
    torch.save({"model": {"weight": torch.full((2, 2), 3.0), "bias": torch.zeros(2)}}, tmp_path / "ok.pth")
    SafeDetectionCheckpointer(model, str(tmp_path / "run")).load(str(tmp_path / "ok.pth"))
    assert torch.equal(model.weight.detach(), torch.full((2, 2), 3.0))


@pytest.mark.parametrize("kind", KINDS)
def test_pretrain_resume_checkpoint(tmp_path: Path, kind: str, capfd: pytest.CaptureFixture[str]) -> None:
    from maskalign.engine.pretrain import train

    cfg = pretrain_cfg(tmp_path, "name=r", "data.num_workers=0")
    f, marker = _make(kind, tmp_path / "pretrain" / "r", "checkpoint.pth")
    with pytest.raises(UserError) as e:
        train(cfg)
    _check_refusal(str(e.value), f, marker)
    assert SCRIPT_SENTINEL not in capfd.readouterr().out


def _job(script: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(REPO / "transfer" / script), "--local", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600, env=env)


JOBS = ("finetune.py", "linprobe.py", "robustness.py", "coco_vitdet.py", "ade20k_upernet.py")
# Every loader meets every kind in process (above); through a job's script, the kinds take turns, so
# that each job and each kind is run once (a job reads its --ckpt with one loader, whatever the kind).
JOB_KINDS = [(job, KINDS[i % len(KINDS)]) for i, job in enumerate(JOBS)]
EVAL_ONLY_KINDS = [("coco_vitdet.py", "torchscript"), ("ade20k_upernet.py", "pickle")]


@pytest.mark.slow
@pytest.mark.parametrize(("script", "kind"), JOB_KINDS)
def test_every_job_refuses_its_ckpt(tmp_path: Path, script: str, kind: str) -> None:
    f, marker = _make(kind, tmp_path / "files")
    proc = _job(script, "--ckpt", str(f), "--output-dir", str(tmp_path / "out"))
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    _check_refusal(lines[0], f, marker)
    assert SCRIPT_SENTINEL not in proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize(("script", "kind"), EVAL_ONLY_KINDS)
def test_eval_only_weights_are_refused(tmp_path: Path, script: str, kind: str) -> None:
    """``--eval-only --weights FILE``: detectron2's and mmengine's checkpointers use the one loader."""
    from coco_helpers import make_encoder_ckpt

    encoder = make_encoder_ckpt(tmp_path / "encoder")
    f, marker = _make(kind, tmp_path / "files")
    proc = _job(script, "--ckpt", str(encoder), "--eval-only", "--weights", str(f), "--output-dir",
                str(tmp_path / "out"))
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, proc.stderr[-3000:]
    _check_refusal(lines[0], f, marker)
    assert SCRIPT_SENTINEL not in proc.stdout
