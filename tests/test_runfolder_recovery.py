"""A corrupt checkpoint is never a dead end: restart needs nothing readable, an unreadable newest
checkpoint falls back to the newest readable one (kept aside, with a note), none readable is one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import pretrain_cfg

from maskalign.checkpoint import CheckpointError
from maskalign.config import to_plain
from maskalign.runfolder.resume import open_run


def _cfg(tmp_path: Path, *extra: str):
    return pretrain_cfg(tmp_path, "name=r", *extra)


def _ckpt(path: Path, cfg, epoch: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": {"w": torch.ones(2)}, "optimizer": {}, "epoch": epoch, "step": 10 * epoch,
                "config": to_plain(cfg), "iter_in_epoch": 0}, path)
    return path


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _open(cfg, out: Path):
    run = open_run(cfg, out, True)
    run.close()
    return run


def test_restart_over_a_truncated_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _cfg(tmp_path, "runtime.restart=true")
    out = tmp_path / "pretrain" / "r"
    _truncate(_ckpt(out / "checkpoint.pth", cfg, 2))
    run = _open(cfg, out)
    assert run.ckpt is None and run.ckpt_path is None
    assert not (out / "checkpoint.pth").exists() and len(list(out.glob("replaced-*.checkpoint.pth"))) == 1
    # a requeued SLURM job with restart=true reads the newest checkpoint to know whether it is its own
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    _truncate(_ckpt(out / "checkpoint.pth", cfg, 2))
    run = _open(cfg, out)
    assert run.ckpt is None and not (out / "checkpoint.pth").exists()


def test_unreadable_newest_falls_back_to_the_newest_readable(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    out = tmp_path / "pretrain" / "r"
    _ckpt(out / "checkpoint-1.pth", cfg, 1)
    _ckpt(out / "checkpoint-2.pth", cfg, 2)
    _truncate(_ckpt(out / "checkpoint.pth", cfg, 3))
    run = _open(cfg, out)
    assert run.ckpt_path == out / "checkpoint-2.pth" and run.ckpt["epoch"] == 2
    assert len(run.notes) == 1 and "checkpoint.pth: not a readable checkpoint" in run.notes[0]
    assert "resuming from the newest readable checkpoint, checkpoint-2.pth" in run.notes[0]
    kept = list(out.glob("unreadable-*.checkpoint.pth"))
    assert len(kept) == 1 and kept[0].stat().st_size > 0  # kept aside, not deleted
    assert not (out / "checkpoint.pth").exists()


def test_none_readable_is_one_line(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    out = tmp_path / "pretrain" / "r"
    _truncate(_ckpt(out / "checkpoint.pth", cfg, 3))
    with pytest.raises(CheckpointError) as e:
        _open(cfg, out)
    msg = str(e.value)
    assert len(msg.splitlines()) == 1 and str(out / "checkpoint.pth") in msg
    assert "runtime.restart=true" in msg and "weights_only" not in msg
    assert (out / "checkpoint.pth").is_file()  # nothing moved when nothing can be resumed
