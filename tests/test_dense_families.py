"""Every family on the dense tasks: DINOv2 (patch 14) and BEiT (relative position bias) under ViTDet,
DINOv2 with registers through ADE20K at 512 px.

Exact where the choice allows it: the patch-14 map given to ViTDet's pyramid is the timm model's own
output resampled bilinearly onto the stride-16 grid; a windowed BEiT block is timm's BEiT block,
with the table timm's filter makes for that window, run on the window alone. One training
iteration of each through the entry points (``slow``)."""

from __future__ import annotations

from pathlib import Path

import encoder_formats as fmts
import pytest
import torch
import torch.nn.functional as F

from maskalign.encoders.dense import DenseViT, build_windowed
from maskalign.transfer.source import load_pretrained


def _map(tokens: torch.Tensor, n_prefix: int, grid: int) -> torch.Tensor:
    t = tokens[:, n_prefix:]
    return t.transpose(1, 2).reshape(t.shape[0], t.shape[2], grid, grid)


def test_dinov2_patch14_map_is_resampled_onto_the_stride16_grid(tmp_path: Path) -> None:
    from coco_helpers import require_detectron2

    require_detectron2()
    from maskalign.detection.timm_backbone import TimmViTBackbone

    path, _ = fmts.dinov2(tmp_path, registers=4)  # patch 14, 56 px
    src = load_pretrained(f"{path}#num_heads=2")
    net = TimmViTBackbone(src.arch, img_size=112, window_size=0, window_block_indexes=[], out_stride=16).eval()
    model = src.loaded.build(112)[0]
    net.dense.model.load_state_dict(model.state_dict())
    assert net.output_shape()["last_feat"].stride == 16
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        native = _map(model.forward_features(x), model.num_prefix_tokens, 8)  # 112 / 14: every tensor as trained
        want = F.interpolate(native, size=(7, 7), mode="bilinear", align_corners=False)  # 112 / 16
        assert torch.equal(net(x)["last_feat"], want)


def _timm_beit(path: Path, img_size: int):
    """timm's own BEiT at ``img_size`` from the file, converted by timm's own filter."""
    import timm
    from timm.models.beit import checkpoint_filter_fn

    ref = timm.create_model("beitv2_base_patch16_224", pretrained=False, img_size=img_size, patch_size=8,
                            embed_dim=fmts.DIM, depth=2, num_heads=fmts.HEADS, num_classes=0, global_pool="token")
    missing, _ = ref.load_state_dict(checkpoint_filter_fn(torch.load(path)["model"], ref), strict=False)
    assert not missing
    return ref.eval()


@pytest.mark.parametrize("window", [4, 2], ids=["window_as_trained", "window_resized"])
def test_a_windowed_beit_block_is_timms_beit_on_that_window(tmp_path: Path, window: int) -> None:
    path, _ = fmts.beit(tmp_path)  # per-block tables for a 4 x 4 grid (32 px, patch 8)
    src = load_pretrained(f"{path}#num_heads=2")
    model = build_windowed(src.loaded, 64, window, {1})  # 8 x 8 grid; block 0 windowed, block 1 global
    alone = _timm_beit(path, window * 8)  # timm's BEiT on a grid the size of one window
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.blocks[0].attn.relative_position_bias_table,
                           alone.blocks[0].attn.relative_position_bias_table)
        out = DenseViT(model, window_size=window, global_blocks=[1], out_indices=[0])(x)[0]
        seq = torch.cat([model.cls_token.expand(1, -1, -1), model.patch_embed(x)], dim=1)
        cls, tokens = seq[:, :1], seq[:, 1:].reshape(1, 8, 8, -1)
        for r, c in [(0, 0), (1, 0), (8 // window - 1, 8 // window - 1)]:
            win = tokens[:, r * window:(r + 1) * window, c * window:(c + 1) * window].reshape(1, window * window, -1)
            ref = alone.blocks[0](torch.cat([cls, win], dim=1))[:, 1:].reshape(1, window, window, -1)
            got = out[0, :, r * window:(r + 1) * window, c * window:(c + 1) * window].permute(1, 2, 0)
            assert torch.allclose(got, ref[0], atol=1e-5), (r, c)
        full = _timm_beit(path, 64)  # the global block: timm's table for the whole grid
        assert torch.equal(model.blocks[1].attn.relative_position_bias_table,
                           full.blocks[1].attn.relative_position_bias_table)


# --- one iteration through the entry points (slow) -----------------------------------------------
def _demo_beit(tmp: Path) -> str:
    """A BEiT v2 file at the demo configs' ViT sizes (96 wide, 6 blocks, 3 heads, patch 8), 4 x 4 tables."""
    ref = fmts.timm_model("beitv2_base_patch16_224", 32, patch_size=8, embed_dim=96, depth=6, num_heads=3,
                          global_pool="token")
    sd = dict(ref.state_dict())
    sd["mask_token"] = torch.zeros(1, 1, 96)
    tmp.mkdir(parents=True, exist_ok=True)
    torch.save({"model": sd}, tmp / "beit_demo.pth")
    return f"{tmp / 'beit_demo.pth'}#num_heads=3"


def _demo_dinov2(tmp: Path, registers: int) -> str:
    """DINOv2 (patch 14, as released) at the demo configs' width, depth and heads."""
    tmp.mkdir(parents=True, exist_ok=True)
    path, _ = fmts.dinov2(tmp, registers=registers, img_size=56, embed_dim=96, depth=6, num_heads=3)
    return f"{path}#num_heads=3"


@pytest.mark.slow
@pytest.mark.parametrize("family", ["dinov2", "beit"])
def test_vitdet_one_iteration(tmp_path: Path, family: str) -> None:
    from coco_helpers import FAST, make_coco, require_detectron2, run_script

    from maskalign.records import read_record

    require_detectron2()
    make_coco(tmp_path)
    spec = _demo_dinov2(tmp_path / "enc", 0) if family == "dinov2" else _demo_beit(tmp_path / "enc")
    proc = run_script("--ckpt", spec, "--data", str(tmp_path), "--output-dir", str(tmp_path / "runs"),
                      "--name", family, *FAST, "train.max_iter=1")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = tmp_path / "runs" / "coco" / family
    cfg = (out / "config.yaml").read_text()
    assert "TimmViTBackbone" in cfg
    if family == "dinov2":
        assert "out_stride: 16" in cfg
    rec = read_record(out / "record.json")
    assert rec.method.startswith(f"external:{family}") and rec.config["encoder"]["arch"]["depth"] == 6


@pytest.mark.slow
def test_ade20k_dinov2_registers_at_512px_one_iteration(tmp_path: Path) -> None:
    from ade20k_helpers import crop_overrides, require_mmseg, run_cli

    from maskalign.records import read_record

    require_mmseg()
    spec = _demo_dinov2(tmp_path / "enc", 4)
    # the demo UperNet at the paper's 512 px crop; patch 16 as in the ViT-B/16 recipe, which takes a /14 encoder
    args = ["--ckpt", spec, "--output-dir", str(tmp_path), "--name", "reg512",
            "model.backbone.patch_size=16", "model.neck.rescales=[4,2,1,0.5]", *crop_overrides(512),
            "train_dataloader.batch_size=2",  # BatchNorm in the pooling module needs two
            "param_scheduler.0.end=1", "param_scheduler.1.begin=1", "param_scheduler.1.end=2",
            "train_cfg.val_interval=1", "default_hooks.checkpoint.interval=1", "train_cfg.max_iters=1",
            "+train_dataloader.dataset.indices=2", "+val_dataloader.dataset.indices=1",
            "+test_dataloader.dataset.indices=1"]
    proc = run_cli(*args, cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rec = read_record(tmp_path / "ade20k" / "reg512" / "record.json")
    bb = rec.config["backbone"]
    assert bb["type"] == "MaskalignTimmViT" and bb["patch_size"] == 14 and bb["img_size"] in (512, [512, 512])
    assert rec.method.startswith("external:dinov2_reg")


def _vitb_file(tmp: Path, family: str) -> str:
    """A ViT-B-sized file in the family's official layout: DINOv2 ViT-B/14 (hub layout), BEiT v2 ViT-B/16."""
    tmp.mkdir(parents=True, exist_ok=True)
    if family == "dinov2":
        path, _ = fmts.dinov2(tmp, img_size=224, embed_dim=768, depth=12, num_heads=12)
        return f"{path}#num_heads=12"
    ref = fmts.timm_model("beitv2_base_patch16_224", 224, embed_dim=768, depth=12, num_heads=12, global_pool="token")
    torch.save({"model": dict(ref.state_dict())}, tmp / "beitv2_base.pth")
    return f"{tmp / 'beitv2_base.pth'}#num_heads=12"


@pytest.mark.slow
@pytest.mark.parametrize("family", ["dinov2", "beit"])
def test_vitdet_b_recipe_one_iteration_at_vitb_size(tmp_path: Path, family: str) -> None:
    """ViTDet-B's own config (windows 14, global blocks 2/5/8/11, SimpleFeaturePyramid at stride 16)
    with a ViT-B encoder of the family, at 256 px instead of 1024 (the CPU's budget): the weights fit
    exactly and one training step runs forward and backward."""
    from coco_helpers import require_detectron2

    require_detectron2()
    from detectron2.config import instantiate
    from detectron2.structures import BitMasks, Boxes, Instances
    from detectron2.utils.events import EventStorage

    from maskalign.detection import configs
    from maskalign.detection.timm_backbone import detectron2_state, fit_backbone
    from maskalign.detection.train import backbone_fit

    spec = _vitb_file(tmp_path, family)
    source = load_pretrained(spec)
    cfg = configs.load_config("mask_rcnn_vitdet_b_100ep",
                              ["model.backbone.net.img_size=256", "model.backbone.square_pad=256"])
    fit_backbone(cfg, source, spec)
    model = instantiate(cfg.model)
    fit = backbone_fit(model, detectron2_state(source, cfg))
    assert not fit["unexpected"] and not fit["shape"]
    assert not [k for k in fit["missing"] if k.startswith("backbone.net.")]  # every encoder tensor is loaded
    model.load_state_dict(detectron2_state(source, cfg), strict=False)
    assert model.backbone.net.output_shape()["last_feat"].stride == 16
    if family == "beit":  # windowed blocks keep the 14 x 14 table as trained; global ones get 16 x 16
        blocks = model.backbone.net.dense.model.blocks
        assert blocks[0].attn.relative_position_bias_table.shape[0] == 27 * 27 + 3
        assert blocks[2].attn.relative_position_bias_table.shape[0] == 31 * 31 + 3
    g = torch.Generator().manual_seed(0)
    inst = Instances((256, 256), gt_boxes=Boxes(torch.tensor([[20.0, 30.0, 120.0, 150.0], [100.0, 40.0, 200.0, 90.0]])),
                     gt_classes=torch.tensor([3, 17]))
    masks = torch.zeros(2, 256, 256, dtype=torch.bool)
    masks[0, 30:150, 20:120] = True
    masks[1, 40:90, 100:200] = True
    inst.gt_masks = BitMasks(masks)
    image = (torch.rand(3, 256, 256, generator=g) * 255).to(torch.uint8)
    model.train()
    with EventStorage(0):  # detectron2's training forward logs into it
        losses = model([{"image": image, "instances": inst, "height": 256, "width": 256}])
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    grads = [p.grad for n, p in model.named_parameters() if n.startswith("backbone.net.dense.model.blocks.0.")]
    assert grads and all(gr is not None and torch.isfinite(gr).all() for gr in grads)
