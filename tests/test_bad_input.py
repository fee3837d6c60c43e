"""Bad input gets one clear line (or, for one corrupt image, a warning and a skip); nothing written is lost."""

from __future__ import annotations

import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from conftest import REPO, pretrain_cfg

from maskalign.checkpoint import CheckpointError
from maskalign.config import ConfigError, config_dir, load_config
from maskalign.data.imagenet import DataError, image_folder
from maskalign.records import file_sha256

CONFIGS = config_dir("pretrain")


def _submit(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "pretrain" / "submit.py"), "--local", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=300)


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_unknown_config_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown config key 'optim.epoch'"):
        load_config(None, ["optim.epoch=3"], CONFIGS)


def test_unknown_config_key_from_the_command_line(tmp_path: Path) -> None:
    line = _one_error_line(_submit("align.topk=3", cwd=tmp_path))
    assert "align.topk" in line


def test_unknown_config_name(tmp_path: Path) -> None:
    line = _one_error_line(_submit("no_such_config", cwd=tmp_path))
    assert "no_such_config" in line


def test_missing_data_folder(tmp_path: Path) -> None:
    line = _one_error_line(_submit("data.dataset=imagenet", f"data.root={tmp_path / 'nowhere'}", cwd=tmp_path))
    assert str(tmp_path / "nowhere" / "train") in line


def test_missing_teacher_checkpoint(tmp_path: Path) -> None:
    line = _one_error_line(_submit("teacher.backend=local", f"teacher.checkpoint={tmp_path / 't.pth'}",
                                   cwd=tmp_path))
    assert str(tmp_path / "t.pth") in line


def test_missing_imagenet_train_folder_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=str(tmp_path / "train")):
        image_folder(tmp_path, "train")


def test_corrupt_jpeg_is_skipped_with_a_warning(tmp_path: Path, tiny_demo_imagenet: Path) -> None:
    root = tmp_path / "in"
    cls = sorted((tiny_demo_imagenet / "train").iterdir())[0]
    (root / "train" / cls.name).mkdir(parents=True)
    good = sorted(cls.iterdir())[:3]
    for f in good:
        shutil.copy(f, root / "train" / cls.name / f.name)
    bad = root / "train" / cls.name / "000_broken.JPEG"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    ds = image_folder(root, "train")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        img, label = ds[0]  # the broken file sorts first
    assert img.size[0] > 0 and label == 0
    assert any(str(bad) in str(w.message) for w in caught)


def test_checkpoint_of_the_wrong_shape_is_refused_and_kept(tmp_path: Path, tiny_demo_encoder: Path,
                                                           tiny_demo_world: Path) -> None:
    from maskalign.engine.pretrain import train

    out = tmp_path / "pretrain" / "session"
    shutil.copytree(tiny_demo_encoder.parent, out)
    before = file_sha256(out / "checkpoint.pth")
    cfg = pretrain_cfg(tmp_path, "name=session", "optim.epochs=6", "align.top_k=3", "data.num_workers=0")
    with pytest.raises(CheckpointError, match="checkpoint.pth: does not fit"):
        train(cfg)
    assert file_sha256(out / "checkpoint.pth") == before


def test_truncated_checkpoint_is_one_line(tmp_path: Path) -> None:
    from maskalign.checkpoint import load_file

    p = tmp_path / "checkpoint.pth"
    torch.save({"x": torch.zeros(1000)}, p)
    p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_file(p)
