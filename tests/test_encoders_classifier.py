"""Fine-tuning / probing classifiers are built around the family's timm model, exactly, and layer
decay assigns the families' stem and block tensors (registers, CLIP's pre-norm, BEiT's tables)
the MAE layer ids."""

from __future__ import annotations

from pathlib import Path

import encoder_formats as fmts
import pytest
import torch

from maskalign.transfer.classifier import classifier_from, load_classifier
from maskalign.transfer.layer_decay import param_groups_lrd
from maskalign.transfer.source import load_pretrained

WRITERS = {"dinov2_reg": lambda t: fmts.dinov2(t, registers=4), "clip": fmts.clip, "beit": fmts.beit,
           "deit3": fmts.deit3}


@pytest.mark.parametrize("family", sorted(WRITERS))
def test_token_classifier_runs_the_encoder_exactly(tmp_path: Path, family: str) -> None:
    path, _ = WRITERS[family](tmp_path)
    src = load_pretrained(f"{path}#num_heads={fmts.HEADS}")
    model, report = classifier_from(src, 5, kind="linprobe", global_pool="token")
    assert report.new == ["head.1.bias", "head.1.weight"] or report.new == ["head.bias", "head.weight"]
    assert report.unused == []
    size = src.arch["img_size"]
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        assert torch.allclose(model.eval().forward_features(x), src.model.forward_features(x), atol=1e-6)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["head.1.weight", "head.1.bias"]


def test_avg_pool_classifier_swaps_the_final_norm_for_fc_norm(tmp_path: Path) -> None:
    path, _ = fmts.dinov2(tmp_path, registers=4)
    src = load_pretrained(f"{path}#num_heads={fmts.HEADS}")
    model, report = classifier_from(src, 5, kind="finetune", global_pool="avg", img_size=28)
    assert report.new == ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]
    assert report.unused == ["norm.bias", "norm.weight"] and report.pos_embed_resized == (4, 4, 2, 2)
    assert model.reg_token.shape == (1, 4, fmts.DIM)


def _lr_scale_of(groups: list[dict], name: str) -> float:
    return next(g["lr_scale"] for g in groups if name in g["param_names"])


@pytest.mark.parametrize("family", ["dinov2_reg", "clip", "beit"])
def test_layer_decay_ids_for_family_parameters(tmp_path: Path, family: str) -> None:
    path, _ = WRITERS[family](tmp_path)
    src = load_pretrained(f"{path}#num_heads={fmts.HEADS}")
    model, _ = classifier_from(src, 5, kind="finetune", global_pool="avg")
    groups = param_groups_lrd(model, 0.05, 0.5)
    depth = 2  # lr scale = 0.5 ** (depth + 1 - layer id): stem 0.125, block i 0.5 ** (2 - i), top 1
    assert _lr_scale_of(groups, "patch_embed.proj.weight") == 0.125
    assert _lr_scale_of(groups, "head.weight") == 1.0
    if family == "dinov2_reg":
        assert _lr_scale_of(groups, "reg_token") == 0.125
        assert _lr_scale_of(groups, "blocks.1.ls1.gamma") == 0.5
    if family == "clip":
        assert _lr_scale_of(groups, "norm_pre.weight") == 0.125
    if family == "beit":
        assert _lr_scale_of(groups, "blocks.0.attn.relative_position_bias_table") == 0.5 ** depth


def test_saved_classifier_of_a_family_reloads(tmp_path: Path) -> None:
    from maskalign.transfer.classifier import classifier_spec

    path, _ = fmts.clip(tmp_path)
    src = load_pretrained(f"{path}#num_heads={fmts.HEADS}")
    model, _ = classifier_from(src, 5, kind="finetune", global_pool="avg")
    torch.save({"model": model.state_dict(), "classifier": classifier_spec(src.arch, 5, "finetune", 32, "avg"),
                "meta": src.meta, "classes": list("abcde")}, tmp_path / "ft.pth")
    again, _ = load_classifier(tmp_path / "ft.pth")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(again(x), model.eval()(x), atol=1e-6)
    # what robustness records as its source: the classifier file loads as the same CLIP family
    assert load_pretrained(tmp_path / "ft.pth").family == "clip_quickgelu"
