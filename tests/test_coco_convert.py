"""The encoder -> detectron2 conversion: exact features, and only the detector's new parts missing."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch
from coco_helpers import demo_encoder_state, make_encoder_ckpt, require_detectron2

require_detectron2()
pytestmark = [
    pytest.mark.filterwarnings("ignore:Importing from timm.models.layers:FutureWarning"),
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:torch.meshgrid:UserWarning"),
]

from maskalign.detection import configs  # noqa: E402
from maskalign.detection.convert import to_detectron2, write_detectron2_checkpoint  # noqa: E402
from maskalign.detection.train import backbone_fit  # noqa: E402

# What a pre-trained plain ViT cannot provide to ViTDet: relative position tables (zero-initialised),
# the simple feature pyramid and the RPN/ROI heads.
NEW_PARTS = ("backbone.net.blocks.", "backbone.simfp_", "proposal_generator.", "roi_heads.")


def _plain_d2_vit(arch: dict):
    from detectron2.modeling import ViT

    return ViT(
        img_size=arch["img_size"],
        patch_size=arch["patch_size"],
        embed_dim=arch["embed_dim"],
        depth=arch["depth"],
        num_heads=arch["num_heads"],
        mlp_ratio=arch["mlp_ratio"],
        qkv_bias=True,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        use_abs_pos=True,
        use_rel_pos=False,
        window_size=0,
        pretrain_img_size=arch["img_size"],
        pretrain_use_cls_token=True,
    )


def test_converted_weights_give_the_same_patch_features() -> None:
    enc = demo_encoder_state().eval()
    arch = enc.arch()
    d2 = _plain_d2_vit(arch).eval()
    d2.load_state_dict(to_detectron2(enc.state_dict(), prefix=""), strict=True)
    images = torch.randn(2, 3, arch["img_size"], arch["img_size"], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = enc.patch_embed(images) + enc.pos_embed[:, 1:]
        assert torch.allclose(d2.patch_embed(images).flatten(1, 2) + enc.pos_embed[:, 1:], ours)
        # detectron2's ViT has no [CLS] token: the detector runs the blocks over patch tokens only.
        for blk in enc.blocks:
            ours = blk(ours)
        theirs = d2(images)["last_feat"].flatten(2).transpose(1, 2)
    assert theirs.shape == ours.shape == (2, (arch["img_size"] // arch["patch_size"]) ** 2, arch["embed_dim"])
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5)


def test_conversion_keeps_pos_embed_with_cls_row_and_drops_cls_and_norm() -> None:
    state = demo_encoder_state().state_dict()
    out = to_detectron2(state)
    assert (
        out["backbone.net.pos_embed"].shape == state["pos_embed"].shape
    )  # (1, 1 + 8*8, 96), no offline resize
    assert not any(k.endswith(("cls_token", ".norm.weight")) and "blocks" not in k for k in out)
    assert len(out) == len(state) - 3  # cls_token, norm.weight, norm.bias
    with pytest.raises(ValueError, match="decoder"):
        to_detectron2({**state, "decoder.weight": torch.zeros(1)})


def _check_fit(model, state, ckpt_path: Path) -> None:
    from detectron2.checkpoint import DetectionCheckpointer

    fit = backbone_fit(model, to_detectron2(state))
    assert fit["unexpected"] == [] and fit["shape"] == []
    assert fit["missing"] and all(k.startswith(NEW_PARTS) for k in fit["missing"])
    # inside the ViT only the relative position tables are new
    assert all(
        k.endswith(("rel_pos_h", "rel_pos_w")) for k in fit["missing"] if k.startswith("backbone.net.")
    )
    DetectionCheckpointer(model).load(str(write_detectron2_checkpoint(state, ckpt_path)))
    own = model.state_dict()
    for k, v in to_detectron2(state).items():
        assert torch.equal(own[k], v), k


def test_tiny_vitdet_loads_the_demo_encoder(tmp_path: Path) -> None:
    from detectron2.config import instantiate

    enc = demo_encoder_state()
    cfg = configs.load_config("mask_rcnn_vitdet_tiny_demo")
    configs.fit_backbone(cfg, enc.arch())
    _check_fit(instantiate(cfg.model), enc.state_dict(), tmp_path / "d2.pth")


def test_vitdet_b_settings_load_a_vit_b_encoder(tmp_path: Path) -> None:
    from detectron2.config import instantiate

    from maskalign.models import build_vit

    enc = build_vit("vit_base", 224, 16)
    cfg = configs.load_config("mask_rcnn_vitdet_b_25ep_maskalign")
    configs.fit_backbone(cfg, enc.arch())
    assert cfg.model.backbone.net.use_rel_pos and cfg.model.backbone.net.window_size == 14
    _check_fit(instantiate(cfg.model), enc.state_dict(), tmp_path / "d2.pth")


def test_vitdet_b_refuses_a_demo_encoder(tmp_path: Path) -> None:
    cfg = configs.load_config("mask_rcnn_vitdet_b_100ep")
    with pytest.raises(configs.ConfigError, match="embed_dim|patch_size"):
        configs.fit_backbone(cfg, demo_encoder_state().arch())


def test_file_is_tensors_only(tmp_path: Path) -> None:
    path = write_detectron2_checkpoint(demo_encoder_state().state_dict(), tmp_path / "d2.pth")
    obj = torch.load(path, weights_only=True)  # what fvcore's bare torch.load does on torch >= 2.6
    assert set(obj) == {"model"} and all(isinstance(v, torch.Tensor) for v in obj["model"].values())


def test_encoder_export_round_trip(tmp_path: Path) -> None:
    from maskalign.transfer.source import load_pretrained

    src = load_pretrained(make_encoder_ckpt(tmp_path))
    assert src.arch["patch_size"] == 8 and src.arch["embed_dim"] == 96
