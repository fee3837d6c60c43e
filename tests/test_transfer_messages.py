"""What a user sees when something is off: whole one-line messages, fast refusals, the model named right."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from maskalign.encoders.source_spec import CheckpointError


def test_a_text_file_as_ckpt_says_so(tmp_path: Path) -> None:
    from maskalign.transfer.source import load_pretrained

    path = tmp_path / "encoder.pth"
    path.write_text("model: vit_small\nepochs: 100\n")
    with pytest.raises(CheckpointError) as e:
        load_pretrained(str(path))
    msg = str(e.value)
    assert "\n" not in msg and "a text file, not a checkpoint" in msg and "model: vit_small" in msg


def test_an_offline_hub_name_is_refused_within_seconds_suggesting_a_file(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from maskalign.encoders import hub, load_encoder

    monkeypatch.setattr(hub, "_reachable", lambda *a, **k: False)  # no network, decided without waiting
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # other test modules set it for their session
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(CheckpointError) as e:
        load_encoder("timm:vit_small_patch16_224.augreg_in21k")
    msg = str(e.value)
    assert "\n" not in msg and "no network" in msg and "--ckpt" in msg and "local cache" in msg
    assert os.environ.get("HF_HUB_OFFLINE") is None  # the flag is the call's own


def test_inspect_names_the_timm_model_that_was_built(tmp_path: Path) -> None:
    import timm
    from encoder_formats import deit3

    from maskalign.encoders import load_encoder
    from maskalign.encoders.families import built_timm_name

    path, _ = deit3(tmp_path, embed_dim=384, num_heads=6, patch_size=16)
    enc = load_encoder(path)
    name = built_timm_name(enc.arch)
    assert name == "deit3_small_patch16_224"  # a width-384 encoder is not named deit3_base_...
    built = timm.create_model(name, pretrained=False, depth=2, img_size=32, num_classes=0)
    assert built.embed_dim == enc.model.embed_dim and built.patch_embed.patch_size == enc.model.patch_embed.patch_size


def test_transfer_scripts_run_here_when_slurm_does_not_answer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture) -> None:
    """sbatch on PATH, sinfo failing: a demo run goes to this machine, as pre-training does."""
    import test_run_identity  # noqa: F401 - registers the toy task
    from encoder_formats import deit3

    from maskalign.transfer import cli

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool, body in (("sbatch", "exit 1"), ("sinfo", "echo 'slurm_load_partitions: Unable to contact slurm "
                                                         "controller (connect failure)' >&2; exit 1")):
        script = bin_dir / tool
        script.write_text(f"#!/bin/sh\n{body}\n")
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    path, _ = deit3(tmp_path, embed_dim=384, num_heads=6, patch_size=16)
    rc = cli.run("toy_identity", ["--ckpt", str(path), "--output-dir", str(tmp_path / "out")])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert (tmp_path / "out" / "toy_identity" / "deit3-default" / "record.json").is_file()
