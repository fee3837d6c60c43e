"""Layer-wise lr decay and weight-decay groups for UperNet + ViT (the mmseg constructor bug, fixed)."""

from __future__ import annotations

import pytest
from ade20k_helpers import require_mmseg

require_mmseg()

import torch

from maskalign.segmentation.layer_decay import layer_id, lr_scale

DEPTH, RATE, LR, WD = 6, 0.65, 1e-4, 0.05


@pytest.fixture(scope="module")
def model():
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    from maskalign.segmentation.train import load_seg_config

    init_default_scope("mmseg")
    cfg = load_seg_config("upernet_vit_tiny_demo_128")
    return MODELS.build(cfg.model), cfg


def _groups(model, constructor: str, **paramwise):
    from mmengine.optim import build_optim_wrapper

    cfg = {"type": "OptimWrapper", "constructor": constructor,
           "optimizer": {"type": "AdamW", "lr": LR, "betas": (0.9, 0.999), "weight_decay": WD},
           "paramwise_cfg": {"num_layers": DEPTH, **paramwise}}
    wrapper = build_optim_wrapper(model, cfg)
    ids = {id(p): n for n, p in model.named_parameters()}
    return {ids[id(p)]: g for g in wrapper.optimizer.param_groups for p in g["params"]}


def expected_layer(name: str) -> int:
    """The rule written out by hand for the demo backbone (6 blocks)."""
    if name in ("backbone.cls_token", "backbone.pos_embed") or name.startswith("backbone.patch_embed."):
        return 0
    if name.startswith("backbone.layers."):
        return int(name.split(".")[2]) + 1
    return DEPTH + 1


def test_every_parameter_gets_the_decayed_lr_and_the_right_weight_decay(model) -> None:
    m, _ = model
    by_name = _groups(m, "ViTLayerDecayOptimizerConstructor", layer_decay_rate=RATE)
    names = [n for n, p in m.named_parameters() if p.requires_grad]
    assert set(by_name) == set(names)
    for name in names:
        g = by_name[name]
        assert layer_id(name, DEPTH) == expected_layer(name)
        assert g["lr"] == pytest.approx(LR * RATE ** (DEPTH + 1 - expected_layer(name)), rel=1e-12), name
        param = dict(m.named_parameters())[name]
        no_decay = (param.ndim == 1 or name.endswith((".bias", "relative_position_bias_table"))
                    or name in ("backbone.pos_embed", "backbone.cls_token"))
        assert g["weight_decay"] == (0.0 if no_decay else WD), name


def test_named_exemptions_and_scales(model) -> None:
    m, _ = model
    g = _groups(m, "ViTLayerDecayOptimizerConstructor", layer_decay_rate=RATE)
    for name in ("backbone.pos_embed", "backbone.cls_token", "backbone.layers.0.attn.relative_position_bias_table",
                 "backbone.layers.5.attn.relative_position_bias_table", "backbone.layers.3.ln1.weight",
                 "backbone.layers.2.gamma_1", "backbone.patch_embed.projection.bias"):
        assert g[name]["weight_decay"] == 0.0, name
    for name in ("backbone.patch_embed.projection.weight", "backbone.layers.4.attn.qkv.weight",
                 "decode_head.conv_seg.weight", "neck.upsample_2x.0.weight"):
        assert g[name]["weight_decay"] == WD, name
    assert g["backbone.patch_embed.projection.weight"]["lr"] == pytest.approx(LR * RATE ** 7)
    assert g["backbone.layers.5.attn.qkv.weight"]["lr"] == pytest.approx(LR * RATE)
    assert g["backbone.layers.0.attn.qkv.weight"]["lr"] == pytest.approx(LR * RATE ** 6)
    assert g["decode_head.conv_seg.weight"]["lr"] == pytest.approx(LR)
    assert g["auxiliary_head.conv_seg.weight"]["lr"] == pytest.approx(LR)
    assert lr_scale(0, 12, 0.65) == pytest.approx(0.65 ** 13)  # ViT-B: patch embedding at 0.65^13


def test_same_lr_schedule_as_mmseg_but_no_decay_on_embeddings(model) -> None:
    """mmseg 1.2.2's constructor gives the same lrs but decays pos_embed, cls_token and rel-pos tables."""
    m, _ = model
    ours = _groups(m, "ViTLayerDecayOptimizerConstructor", layer_decay_rate=RATE)
    theirs = _groups(m, "LayerDecayOptimizerConstructor", layer_decay_rate=RATE)
    for name in ours:
        assert ours[name]["lr"] == pytest.approx(theirs[name]["lr"], rel=1e-12), name
    fixed = [n for n in ours if ours[n]["weight_decay"] != theirs[n]["weight_decay"]]
    assert sorted(fixed) == sorted(["backbone.pos_embed", "backbone.cls_token"]
                                   + [f"backbone.layers.{i}.attn.relative_position_bias_table" for i in range(DEPTH)])
    assert all(theirs[n]["weight_decay"] == WD and ours[n]["weight_decay"] == 0.0 for n in fixed)


def test_paper_config_uses_the_fixed_constructor() -> None:
    from maskalign.segmentation.train import load_seg_config

    cfg = load_seg_config("upernet_vit_b16_ade20k_512_160k")
    ow = cfg.optim_wrapper
    assert ow.constructor == "ViTLayerDecayOptimizerConstructor"
    assert ow.paramwise_cfg.layer_decay_rate == 0.65 and ow.paramwise_cfg.num_layers == 12
    assert ow.optimizer.type == "AdamW" and ow.optimizer.lr == 1e-4 and ow.optimizer.weight_decay == 0.05
    sched = cfg.param_scheduler
    assert sched[0].type == "LinearLR" and sched[0].end == 1500
    assert sched[1].type == "PolyLR" and sched[1].power == 1.0 and sched[1].end == 160000
    assert cfg.train_cfg.max_iters == 160000 and cfg.train_dataloader.batch_size == 2
    bb = cfg.model.backbone
    assert (bb.type, tuple(bb.img_size), bb.patch_size, bb.embed_dims, bb.num_layers, bb.init_values) == \
        ("MAE", (512, 512), 16, 768, 12, 1.0)
    assert list(bb.out_indices) == [3, 5, 7, 11]
    assert list(cfg.model.neck.rescales) == [4, 2, 1, 0.5]
    dh = cfg.model.decode_head
    assert dh.type == "UPerHead" and dh.channels == 768 and tuple(dh.pool_scales) == (1, 2, 3, 6)
    assert cfg.model.auxiliary_head.type == "FCNHead" and cfg.model.auxiliary_head.loss_decode.loss_weight == 0.4
    assert cfg.model.test_cfg.mode == "slide" and tuple(cfg.model.test_cfg.crop_size) == (512, 512)
    assert tuple(cfg.model.test_cfg.stride) == (341, 341)


def test_step_changes_only_what_it_should(model) -> None:
    """One AdamW step: a zero-gradient pos_embed does not shrink (wd 0), a conv weight does."""
    m, _ = model
    from mmengine.optim import build_optim_wrapper

    wrapper = build_optim_wrapper(m, {"type": "OptimWrapper", "constructor": "ViTLayerDecayOptimizerConstructor",
                                      "optimizer": {"type": "AdamW", "lr": 1e-2, "weight_decay": 0.5},
                                      "paramwise_cfg": {"num_layers": DEPTH, "layer_decay_rate": RATE}})
    pos = m.backbone.pos_embed.detach().clone()
    w = m.decode_head.conv_seg.weight.detach().clone()
    for p in m.parameters():
        p.grad = torch.zeros_like(p)
    wrapper.optimizer.step()
    torch.testing.assert_close(m.backbone.pos_embed.detach(), pos)
    torch.testing.assert_close(m.decode_head.conv_seg.weight.detach(), w * (1 - 1e-2 * 0.5))
