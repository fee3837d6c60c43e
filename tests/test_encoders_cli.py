"""``inspect`` and the bad inputs of the encoder loader: each one line, exit code 2; name-based
loading calls timm's / open_clip's own download (replaced here by a stand-in, no network)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import encoder_formats as fmts
import pytest
import torch

from maskalign.encoders import load_encoder

REPO = Path(__file__).resolve().parents[1]


def _inspect(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "maskalign.encoders", "inspect", *args], capture_output=True,
                          text=True, cwd=REPO, env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})},
                          timeout=300, check=False)


def _one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_inspect_prints_family_arch_and_report(tmp_path: Path) -> None:
    path, _ = fmts.dinov2(tmp_path, registers=4)
    proc = _inspect(f"{path}#num_heads=2", "--task", "ade20k")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "family   dinov2_reg" in out and "timm vit_base_patch14_reg4_dinov2" in out and "reg_tokens=4" in out
    assert "dropped (iBOT mask token" in out and "used 35 tensors" in out and "MaskalignTimmViT" in out
    assert len(out.splitlines()) < 25


def test_unknown_family(tmp_path: Path) -> None:
    torch.save({"model": {"conv1.weight": torch.zeros(8, 3, 3, 3), "fc.weight": torch.zeros(2, 8)}},
               tmp_path / "resnet.pth")
    _one_line_error(_inspect(str(tmp_path / "resnet.pth")), "resnet.pth", "unknown family")


def test_unused_tensors_the_loader_does_not_understand(tmp_path: Path) -> None:
    path, _ = fmts.dinov2(tmp_path)
    state = torch.load(path)
    state["blocks.1.attn.extra_gate"] = torch.zeros(4)
    state["my_adapter.weight"] = torch.zeros(4, 4)
    torch.save(state, path)
    _one_line_error(_inspect(f"{path}#num_heads=2"), "does not understand", "blocks 1", "my_adapter.weight")


def test_timm_name_timm_does_not_have() -> None:
    _one_line_error(_inspect("timm:vit_base_patch15_nonexistent"), "has no model 'vit_base_patch15_nonexistent'")


def test_hub_names_offline_fail_in_one_line() -> None:
    _one_line_error(_inspect("timm:vit_small_patch16_224.augreg_in21k", env={"HF_HUB_OFFLINE": "1"}),
                    "timm could not load its pretrained weights")
    _one_line_error(_inspect("open_clip:ViT-B-16/laion2b_s34b_b88k", env={"HF_HUB_OFFLINE": "1"}),
                    "open_clip could not load pretrained 'laion2b_s34b_b88k'")


def test_dense_task_routes_beit_and_patch14(tmp_path: Path) -> None:
    path, _ = fmts.beit(tmp_path)
    proc = _inspect(f"{path}#num_heads=2", "--task", "coco")
    assert proc.returncode == 0 and "relative position tables resized per window" in proc.stdout
    path, _ = fmts.dinov2(tmp_path)
    proc = _inspect(f"{path}#num_heads=2", "--task", "coco")
    assert proc.returncode == 0 and "stride-14 map resampled onto the stride-16 grid" in proc.stdout


def test_timm_name_calls_timm_pretrained_download(monkeypatch: pytest.MonkeyPatch) -> None:
    import timm

    real, calls = timm.create_model, []
    ref = fmts.timm_model("vit_small_patch14_reg4_dinov2", 56)

    def fake(name: str, pretrained: bool = False, **kw):
        calls.append((name, pretrained, kw.get("num_classes")))
        if pretrained:  # what timm's download would give: its model with the hub weights
            m = real(name.split(".")[0], pretrained=False, depth=2, embed_dim=fmts.DIM, num_heads=fmts.HEADS,
                     img_size=56, **kw)
            m.load_state_dict(ref.state_dict())
            return m
        return real(name, pretrained=False, **kw)

    monkeypatch.setattr(timm, "create_model", fake)
    enc = load_encoder("timm:vit_small_patch14_reg4_dinov2.lvd142m")
    assert calls[0] == ("vit_small_patch14_reg4_dinov2.lvd142m", True, 0)
    assert enc.family == "dinov2_reg" and enc.meta["source"] == {"spec": "timm:vit_small_patch14_reg4_dinov2.lvd142m",
                                                                 "hub": "timm:vit_small_patch14_reg4_dinov2.lvd142m"}
    x = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        assert torch.allclose(enc.model.forward_features(x), ref.forward_features(x), atol=1e-5)


def test_open_clip_name_calls_open_clip_pretrained_download(monkeypatch: pytest.MonkeyPatch) -> None:
    import open_clip

    ref, calls = fmts.open_clip_model(quick_gelu=True), []

    def fake(model_name: str, pretrained: str | None = None, **kw):
        calls.append((model_name, pretrained))
        return ref

    monkeypatch.setattr(open_clip, "create_model", fake)
    enc = load_encoder("open_clip:ViT-B-16/openai")
    assert calls == [("ViT-B-16", "openai")]
    assert enc.family == "clip_quickgelu" and enc.arch["num_heads"] == fmts.HEADS  # read from the tower
    x = torch.randn(1, 3, 32, 32)
    ref.visual.output_tokens = True
    with torch.no_grad():
        assert torch.allclose(enc.model.forward_features(x)[:, 1:], ref.visual(x)[1], atol=1e-5)
