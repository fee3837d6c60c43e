"""A [CLS]-token probe reads the file's final norm; a file without one is refused, as MAE's probe refuses it.

MAE's ``main_linprobe.py`` (no ``--global_pool``) asserts that the only keys the file may lack are
the head's; a global-pool checkpoint (``fc_norm``, no ``norm``) fails that assertion. Here the
refusal is one line naming the file; ``model.global_pool=avg`` probes such a file through its own
``fc_norm``. Features are compared with timm's model holding the file's tensors.
"""

from __future__ import annotations

from pathlib import Path

import encoder_formats as fmts
import pytest
import torch

from maskalign.checkpoint import CheckpointError
from maskalign.transfer.classifier import classifier_from
from maskalign.transfer.source import load_pretrained


def _timm_vit(global_pool: str) -> torch.nn.Module:
    return fmts.timm_model("vit_base_patch16_224", 32, patch_size=8, global_pool=global_pool)


def _save(tmp: Path, model: torch.nn.Module, name: str, drop: tuple[str, ...] = ()) -> Path:
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(drop)}
    torch.save({"model": state}, tmp / name)
    return tmp / name


def test_global_pool_checkpoint_is_refused_for_a_token_probe(tmp_path: Path) -> None:
    path = _save(tmp_path, _timm_vit("avg"), "gp.pth")
    src = load_pretrained(f"{path}#num_heads=2")
    assert "norm.weight" not in src.state and "fc_norm.weight" in src.state
    with pytest.raises(CheckpointError) as e:
        classifier_from(src, 10, kind="linprobe", global_pool="token")
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and "norm" in msg and "global_pool=avg" in msg


def test_avg_probe_of_a_global_pool_checkpoint_uses_its_fc_norm(tmp_path: Path) -> None:
    ref = _timm_vit("avg")
    path = _save(tmp_path, ref, "gp.pth")
    model, report = classifier_from(load_pretrained(f"{path}#num_heads=2"), 10, kind="linprobe", global_pool="avg")
    assert not any(k.startswith("fc_norm.") for k in report.new)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        got = model.forward_head(model.forward_features(x), pre_logits=True)
        want = ref.forward_head(ref.forward_features(x), pre_logits=True)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_token_probe_reads_the_files_final_norm(tmp_path: Path) -> None:
    ref = _timm_vit("token")
    path = _save(tmp_path, ref, "tok.pth")
    model, report = classifier_from(load_pretrained(f"{path}#num_heads=2"), 10, kind="linprobe", global_pool="token")
    assert not any(k.startswith("norm.") for k in report.new)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        got = model.forward_head(model.forward_features(x), pre_logits=True)
        want = ref.forward_head(ref.forward_features(x), pre_logits=True)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
