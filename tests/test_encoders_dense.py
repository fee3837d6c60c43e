"""The dense wrapper runs a timm encoder's own blocks: equal to timm without windows, and each
window equal to the timm block run on that window alone (ViTDet at 1024 px, UperNet at 512 px)."""

from __future__ import annotations

from pathlib import Path

import encoder_formats as fmts
import pytest
import torch

from maskalign.encoders import load_encoder
from maskalign.encoders.dense import DenseViT


def _encoder(tmp_path: Path, size: int):
    import timm

    ref = fmts.perturb(timm.create_model("vit_small_patch14_reg4_dinov2", patch_size=16, img_size=64, depth=2,
                                         embed_dim=32, num_heads=2, num_classes=0))
    torch.save(dict(ref.state_dict()), tmp_path / "dinov2_reg_timm.pth")
    return load_encoder(f"{tmp_path / 'dinov2_reg_timm.pth'}#num_heads=2", img_size=size).model


def _as_map(tokens: torch.Tensor, n_prefix: int, grid: int) -> torch.Tensor:
    t = tokens[:, n_prefix:]
    return t.transpose(1, 2).reshape(t.shape[0], t.shape[2], grid, grid)


@pytest.mark.parametrize("size,out_indices", [(1024, [-1]), (512, [0, 1])], ids=["vitdet_1024", "upernet_512"])
def test_windows_off_equals_timm(tmp_path: Path, size: int, out_indices: list[int]) -> None:
    model = _encoder(tmp_path, size)
    x = torch.randn(1, 3, size, size)
    grid = size // 16
    with torch.no_grad():
        maps = DenseViT(model, window_size=0, out_indices=out_indices)(x)
        last = _as_map(model.forward_features(x), model.num_prefix_tokens, grid)
        assert torch.allclose(maps[-1], last, atol=1e-5)
        if len(out_indices) > 1:
            first = model.forward_intermediates(x, indices=[0], norm=False, output_fmt="NCHW",
                                                intermediates_only=True)[0]
            assert torch.allclose(maps[0], first, atol=1e-5)


def test_each_window_equals_the_block_on_that_window_alone(tmp_path: Path) -> None:
    model = _encoder(tmp_path, 1024)
    win, grid, p = 14, 64, model.num_prefix_tokens  # 64 = 4 * 14 + 8: the last windows are zero-padded
    x = torch.randn(1, 3, 1024, 1024)
    with torch.no_grad():
        out = DenseViT(model, window_size=win, global_blocks=[1], out_indices=[0])(x)[0]
        seq = model.norm_pre(model._pos_embed(model.patch_embed(x)))
        prefix, tokens = seq[:, :p], seq[:, p:].reshape(1, grid, grid, -1)
        padded = torch.zeros(1, 70, 70, tokens.shape[-1])
        padded[:, :grid, :grid] = tokens
        for r, c in [(0, 0), (1, 2), (4, 4)]:
            window = padded[:, r * win:(r + 1) * win, c * win:(c + 1) * win].reshape(1, win * win, -1)
            alone = model.blocks[0](torch.cat([prefix, window], dim=1))[:, p:].reshape(1, win, win, -1)
            h, w = min(win, grid - r * win), min(win, grid - c * win)
            got = out[0, :, r * win:r * win + h, c * win:c * win + w].permute(1, 2, 0)
            assert torch.allclose(got, alone[0, :h, :w], atol=1e-5), (r, c)
        # and the windows really change the result (the block is not run globally)
        glob = DenseViT(model, window_size=0, out_indices=[0])(x)[0]
        assert not torch.allclose(out, glob, atol=1e-3)


def test_beit_windows_get_window_tables_and_without_windows_beit_is_exact(tmp_path: Path) -> None:
    path, _ = fmts.beit(tmp_path)
    windowed = load_encoder(f"{path}#num_heads=2", img_size=64).model
    DenseViT(windowed, window_size=4, global_blocks=[1])  # tests/test_dense_families.py: exact per window
    assert windowed.blocks[0].attn.relative_position_bias_table.shape[0] == 7 * 7 + 3
    assert windowed.blocks[1].attn.relative_position_bias_table.shape[0] == 15 * 15 + 3
    model = load_encoder(f"{path}#num_heads=2", img_size=64).model
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():  # without windows BEiT is exact
        got = DenseViT(model, out_indices=[-1])(x)[0]
        assert torch.allclose(got, _as_map(model.forward_features(x), 1, 8), atol=1e-5)


def test_detectron2_backbone_gives_vitdet_its_last_feat(tmp_path: Path) -> None:
    from coco_helpers import require_detectron2

    require_detectron2()
    from maskalign.detection.timm_backbone import TimmViTBackbone
    from maskalign.transfer.source import load_pretrained

    path, _ = fmts.deit3(tmp_path, img_size=32)
    src = load_pretrained(f"{path}#num_heads=2")
    net = TimmViTBackbone(src.arch, img_size=64, window_size=4, window_block_indexes=[0], out_feature="last_feat")
    net.dense.model.load_state_dict(src.loaded.build(64)[0].state_dict())
    shape = net.output_shape()["last_feat"]
    assert (shape.channels, shape.stride) == (fmts.DIM, 8)
    names = [n for n, _ in net.named_parameters()]
    assert "dense.model.blocks.1.ls2.gamma" in names  # detectron2's get_vit_lr_decay_rate finds ".blocks.<i>."
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = DenseViT(net.dense.model, 4, [1], [-1])(x)[0]
        assert torch.equal(net.eval()(x)["last_feat"], expected)


def test_mmseg_backbone_names_follow_mmsegs_vit(tmp_path: Path) -> None:
    from ade20k_helpers import require_mmseg

    require_mmseg()
    from maskalign.segmentation.mmseg_import import import_mmseg

    import_mmseg()
    from maskalign.segmentation.timm_backbone import MaskalignTimmViT
    from maskalign.transfer.source import load_pretrained

    path, _ = fmts.dinov2(tmp_path, registers=4)
    src = load_pretrained(f"{path}#num_heads=2")
    bb = MaskalignTimmViT(src.arch, img_size=(56, 56), out_indices=[0, 1], num_layers=2, embed_dims=fmts.DIM)
    names = {n for n, _ in bb.named_parameters()}
    assert {"cls_token", "reg_token", "pos_embed", "patch_embed.proj.weight", "layers.1.ls1.gamma"} <= names
    assert not any(n.startswith(("blocks.", "_dense")) for n in names)
    with pytest.raises(Exception, match="does not describe"):
        MaskalignTimmViT(src.arch, img_size=56, out_indices=[1], num_layers=12)
