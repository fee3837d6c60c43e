"""Encoder conversions at the detectors' real resolutions and settings, every weight moved off its
initial value, against references written from the libraries' documented behaviour.

* ViTDet-B (detectron2, ``mask_rcnn_vitdet_b_100ep``) at 1024 px: the 14x14 pre-training table is
  bicubically interpolated to 64x64 at run time (detectron2's ``get_abs_pos``), windowed blocks
  (14x14) zero-pad the normed 64x64 grid to 70x70 and attend within windows, padded tokens
  included; the other blocks attend globally. The relative position tables are new (zero).
  Depth is cut to 3 (two window blocks, one global: the start of ViTDet-B's pattern) to fit
  2 CPU cores; every other setting is the config's.
* mmseg's ``MAE`` backbone through the ADE20K job's own config, ``prepare_config`` and
  ``backbone.init_cfg`` file at 512 px, against timm's ViT with the table resized by hand.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

pytestmark = pytest.mark.slow


def _perturbed_vit_b(depth: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A ViT-B/16 (224 px) encoder state in timm names, every tensor (pos_embed too) off its init."""
    from maskalign.models import build_vit

    torch.manual_seed(seed)
    enc = build_vit("vit_base", 224, 16)
    state = {k: v for k, v in enc.state_dict().items() if not k.startswith("blocks.") or int(k.split(".")[1]) < depth}
    g = torch.Generator().manual_seed(seed + 1)
    return {k: v + torch.randn(v.shape, generator=g) * (0.02 if "pos_embed" in k else 0.05) for k, v in state.items()}


def _ln(x: torch.Tensor, s: dict, p: str, eps: float = 1e-6) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], s[f"{p}.weight"], s[f"{p}.bias"], eps)


def _attn(x: torch.Tensor, s: dict, p: str, heads: int) -> torch.Tensor:
    b, n, d = x.shape
    qkv = (x @ s[f"{p}.qkv.weight"].T + s[f"{p}.qkv.bias"]).reshape(b, n, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    w = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // heads), dim=-1)
    return (w @ v).transpose(1, 2).reshape(b, n, d) @ s[f"{p}.proj.weight"].T + s[f"{p}.proj.bias"]


def _mlp(x: torch.Tensor, s: dict, p: str) -> torch.Tensor:
    return F.gelu(x @ s[f"{p}.fc1.weight"].T + s[f"{p}.fc1.bias"]) @ s[f"{p}.fc2.weight"].T + s[f"{p}.fc2.bias"]


def _resize_table(pos: torch.Tensor, grid: int) -> torch.Tensor:
    """Patch rows of (1, 1+g*g, D) -> (1, grid, grid, D), bicubic, align_corners=False."""
    g0 = math.isqrt(pos.shape[1] - 1)
    t = pos[:, 1:].reshape(1, g0, g0, -1).permute(0, 3, 1, 2)
    return F.interpolate(t, (grid, grid), mode="bicubic", align_corners=False).permute(0, 2, 3, 1)


def reference_vitdet(images: torch.Tensor, s: dict, depth: int, heads: int, window: int,
                     window_blocks: list[int]) -> torch.Tensor:
    x = F.conv2d(images, s["patch_embed.proj.weight"], s["patch_embed.proj.bias"], stride=16).permute(0, 2, 3, 1)
    b, h, w, d = x.shape
    x = x + _resize_table(s["pos_embed"], h)
    for i in range(depth):
        p = f"blocks.{i}"
        y = _ln(x, s, f"{p}.norm1")
        if i in window_blocks:
            ph, pw = -h % window, -w % window
            y = F.pad(y, (0, 0, 0, pw, 0, ph))  # zeros after the norm, as detectron2's window_partition
            hp, wp = h + ph, w + pw
            win = y.reshape(b, hp // window, window, wp // window, window, d).permute(0, 1, 3, 2, 4, 5)
            out = _attn(win.reshape(-1, window * window, d), s, f"{p}.attn", heads)
            out = out.reshape(b, hp // window, wp // window, window, window, d).permute(0, 1, 3, 2, 4, 5)
            y = out.reshape(b, hp, wp, d)[:, :h, :w]
        else:
            y = _attn(y.reshape(b, h * w, d), s, f"{p}.attn", heads).reshape(b, h, w, d)
        x = x + y
        x = x + _mlp(_ln(x, s, f"{p}.norm2"), s, f"{p}.mlp")
    return x.permute(0, 3, 1, 2)


def test_vitdet_b_at_1024_px_equals_the_reference(tmp_path: Path) -> None:
    from coco_helpers import require_detectron2

    require_detectron2()
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import instantiate

    from maskalign.detection import configs
    from maskalign.detection.convert import write_detectron2_checkpoint

    depth = 3
    state = _perturbed_vit_b(depth)
    cfg = configs.load_config("mask_rcnn_vitdet_b_100ep")
    arch = {"img_size": 224, "patch_size": 16, "embed_dim": 768, "depth": 12, "num_heads": 12, "mlp_ratio": 4.0}
    configs.fit_backbone(cfg, arch)
    net_cfg = cfg.model.backbone.net
    assert (net_cfg.img_size, net_cfg.window_size, net_cfg.use_rel_pos) == (1024, 14, True)
    assert list(net_cfg.window_block_indexes) == [0, 1, 3, 4, 6, 7, 9, 10]
    assert net_cfg.pretrain_img_size == 224 and net_cfg.pretrain_use_cls_token
    net_cfg.depth = depth
    net_cfg.window_block_indexes = [0, 1]
    net_cfg.drop_path_rate = 0.0
    net = instantiate(net_cfg).eval()
    # The job's path: the converted file, loaded by detectron2's checkpointer under "backbone.net.".
    path = write_detectron2_checkpoint(state, tmp_path / "d2.pth")

    class Holder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = torch.nn.Module()
            self.backbone.net = net

    DetectionCheckpointer(Holder()).load(str(path))
    for blk in net.blocks:
        assert torch.count_nonzero(blk.attn.rel_pos_h) == 0 and torch.count_nonzero(blk.attn.rel_pos_w) == 0
    images = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        theirs = net(images)["last_feat"]
        ours = reference_vitdet(images, state, depth, 12, 14, [0, 1])
    assert theirs.shape == (1, 768, 64, 64)
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-4)


def test_mmseg_backbone_through_the_job_init_path_at_512_px(tmp_path: Path) -> None:
    from ade20k_helpers import require_mmseg

    require_mmseg()
    from timm.models.vision_transformer import VisionTransformer

    from maskalign.checkpoint import export_encoder
    from maskalign.segmentation.mmseg_import import import_mmseg
    from maskalign.segmentation.train import load_seg_config, prepare_config, write_backbone_init
    from maskalign.tasks import JobSpec
    from maskalign.transfer.source import load_pretrained

    import_mmseg()
    from mmseg.registry import MODELS

    depth = 4
    state = _perturbed_vit_b(depth, seed=5)
    arch = {"img_size": 224, "patch_size": 16, "embed_dim": 768, "depth": depth, "num_heads": 12, "mlp_ratio": 4.0}
    src = load_pretrained(export_encoder(tmp_path / "pt", state, {"arch": arch, "method": "maskalign"}))
    config = "upernet_vit_b16_ade20k_512_160k"
    overrides = [f"model.backbone.num_layers={depth}", "model.backbone.out_indices=[0,1,2,3]",
                 f"optim_wrapper.paramwise_cfg.num_layers={depth}"]
    cfg = load_seg_config(config, overrides)
    # the job's own spec, as the ADE20K task builds it
    spec = JobSpec(task="ade20k", ckpt=str(tmp_path / "pt" / "encoder.pth"), output_root=str(tmp_path / "out"),
                   run="t", config=config, overrides=tuple(overrides), options={"data_root": str(tmp_path)})
    init = tmp_path / "backbone_init.pth"
    prepare_config(cfg, spec, src.arch, 150, 1, False, init)
    write_backbone_init(src.state, cfg, init)
    assert cfg.model.backbone.img_size in (512, (512, 512))
    bb = MODELS.build(cfg.model.backbone)
    bb.init_weights()  # reads backbone.init_cfg, as the runner does
    bb.eval()
    ref = VisionTransformer(img_size=512, patch_size=16, embed_dim=768, depth=depth, num_heads=12,
                            num_classes=0).eval()
    own = dict(state)
    own["pos_embed"] = torch.cat([state["pos_embed"][:, :1],
                                  _resize_table(state["pos_embed"], 32).reshape(1, -1, 768)], 1)
    ref.load_state_dict(own, strict=True)
    images = torch.randn(1, 3, 512, 512, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        theirs = bb(images)
        x = ref._pos_embed(ref.patch_embed(images))
        want = []
        for blk in ref.blocks:
            x = blk(x)
            want.append(x[:, 1:].reshape(1, 32, 32, 768).permute(0, 3, 1, 2))
    assert len(theirs) == depth
    for a, b in zip(theirs, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
