"""Transfer jobs read the encoder of every pre-training format, and refuse what is not one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from maskalign.checkpoint import CheckpointError, export_encoder
from maskalign.models import build_vit
from maskalign.models.pos_embed import resize_pos_embed
from maskalign.transfer.classifier import build_classifier, load_encoder_into
from maskalign.transfer.source import load_pretrained

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def student():
    torch.manual_seed(0)
    return build_vit("vit_tiny_demo", img_size=64, patch_size=8)


def _finetune_model(src, img_size=None, pool="avg"):
    model = build_classifier(src.arch, 10, kind="finetune", img_size=img_size, global_pool=pool)
    return model, load_encoder_into(model, src.state, src.path)


def _assert_same_encoder(model, student) -> None:
    got = model.state_dict()
    for k, v in student.state_dict().items():
        if not k.startswith("norm."):
            assert torch.equal(got[k], v), k


def test_encoder_pth_with_sidecar(tmp_path: Path, student) -> None:
    meta = {"arch": student.arch(), "method": "maskalign", "run": "r1"}
    path = export_encoder(tmp_path, student.state_dict(), meta)
    src = load_pretrained(path)
    assert src.meta["method"] == "maskalign" and src.arch["depth"] == 6
    model, report = _finetune_model(src)
    # global pooling: a fresh head and fc_norm, the final norm unused (MAE deletes it)
    assert report.new == ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]
    assert report.unused == ["norm.bias", "norm.weight"]
    assert report.pos_embed_resized is None
    _assert_same_encoder(model, student)
    assert model.head.weight.std() < 1e-3  # trunc_normal(std=2e-5)
    _, report = _finetune_model(src, pool="token")
    assert report.new == ["head.bias", "head.weight"] and report.unused == []


def test_training_checkpoint_dict(tmp_path: Path, student) -> None:
    """A ``checkpoint.pth``-like dict: encoder under ``encoder.``, teacher/DA/decoder tensors beside it."""
    model_state = {f"encoder.{k}": v for k, v in student.state_dict().items()}
    model_state.update({"teacher.blocks.0.attn.qkv.weight": torch.zeros(3, 3), "da.weights": torch.zeros(6, 5),
                        "adaptors.0.weight": torch.zeros(4, 4)})
    torch.save({"model": model_state, "optimizer": {"state": {}, "param_groups": []}, "epoch": 3, "step": 10,
                "meta": {"arch": student.arch(), "method": "maskalign", "run": "r2"}}, tmp_path / "checkpoint.pth")
    src = load_pretrained(tmp_path / "checkpoint.pth")
    assert not any(k.startswith(("teacher.", "da.", "adaptors.")) for k in src.state)
    model, _ = _finetune_model(src)
    _assert_same_encoder(model, student)


def test_mae_style_dict(tmp_path: Path, student) -> None:
    """MAE's pre-training checkpoint: ``{"model": ...}`` with mask token and decoder, no metadata.

    Without metadata the head count is known only for timm's standard widths (here ViT-Ti's 192,
    3 heads); the demo width 96 is refused in one line rather than loaded with a guessed head count.
    """
    torch.manual_seed(0)
    std = build_vit("vit_tiny", img_size=64, patch_size=8)
    for enc, name in ((std, "mae_pretrain.pth"), (student, "demo_width.pth")):
        state = dict(enc.state_dict())
        state.update({"mask_token": torch.zeros(1, 1, 64), "decoder_embed.weight": torch.zeros(64, enc.embed_dim),
                      "decoder_pos_embed": torch.zeros(1, 65, 64), "decoder_blocks.0.norm1.weight": torch.ones(64),
                      "decoder_pred.weight": torch.zeros(192, 64)})
        torch.save({"model": state, "epoch": 799}, tmp_path / name)
    src = load_pretrained(tmp_path / "mae_pretrain.pth")
    assert not any(k.startswith(("decoder", "mask_token")) for k in src.state)
    assert src.arch["embed_dim"] == 192 and src.arch["depth"] == 12 and src.arch["img_size"] == 64
    assert src.arch["num_heads"] == 3
    model, _ = _finetune_model(src)
    _assert_same_encoder(model, std)
    with pytest.raises(CheckpointError) as e:
        load_pretrained(tmp_path / "demo_width.pth")
    assert "demo_width.pth" in str(e.value) and "96" in str(e.value) and "\n" not in str(e.value)


def test_missing_block_is_refused_in_one_line(tmp_path: Path, student) -> None:
    state = {k: v for k, v in student.state_dict().items() if not k.startswith("blocks.2.")}
    path = export_encoder(tmp_path, state, {"arch": student.arch()})
    with pytest.raises(CheckpointError) as e:  # refused when loaded, before any job builds a model
        load_pretrained(path)
    msg = str(e.value)
    assert "blocks 2" in msg and "\n" not in msg


def test_pos_embed_interpolated_64_to_96(tmp_path: Path, student) -> None:
    path = export_encoder(tmp_path, student.state_dict(), {"arch": student.arch()})
    src = load_pretrained(path)
    model, report = _finetune_model(src, img_size=96)
    assert report.pos_embed_resized == (8, 8, 12, 12)
    assert model.pos_embed.shape == (1, 1 + 12 * 12, 96)
    expected = resize_pos_embed(student.pos_embed.detach(), (12, 12))
    assert torch.allclose(model.pos_embed.detach(), expected)
    assert torch.equal(model.pos_embed[:, 0], student.pos_embed[:, 0].detach())  # [CLS] row kept
    with torch.no_grad():
        assert model(torch.randn(2, 3, 96, 96)).shape == (2, 10)


def _run_script(script: str, ckpt: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, str(REPO / "transfer" / script), "--local", "--ckpt", str(ckpt),
                           f"output_dir={tmp_path / 'out'}"], capture_output=True, text=True, env=env, check=False,
                          cwd=REPO, timeout=300)


def test_checkpoint_without_encoder_is_refused_by_the_script(tmp_path: Path) -> None:
    torch.save({"model": {"fc.weight": torch.zeros(2, 2)}, "epoch": 1}, tmp_path / "not_a_vit.pth")
    r = _run_script("finetune.py", tmp_path / "not_a_vit.pth", tmp_path)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "no ViT encoder weights" in lines[0] and "not_a_vit.pth" in lines[0]
    assert not (tmp_path / "out").exists()


def test_robustness_refuses_a_pretraining_checkpoint(tmp_path: Path, student) -> None:
    path = export_encoder(tmp_path / "pt", student.state_dict(), {"arch": student.arch()})
    r = _run_script("robustness.py", path, tmp_path)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "not a trained classifier" in lines[0]
