"""The dense wrapper on a pre-norm (CLIP) encoder, and position tables resampled the family's way.

Expected values come from the families' own code: open_clip's ``forward_intermediates`` and its
residual blocks for CLIP (whose ``ln_pre`` -- timm's ``norm_pre`` -- is not the identity, unlike
DINOv2's), and timm's ``resample_abs_pos_embed`` (bicubic, antialiased, prefix rows kept; what
timm's checkpoint filters apply) for the tables of the timm families at the job's resolution.
Downsampling is checked as well as upsampling: antialiasing changes only the former, so MAE's
plain bicubic resize would pass an upsampling check.
"""

from __future__ import annotations

from pathlib import Path

import encoder_formats as fmts
import pytest
import torch

from maskalign.encoders import load_encoder
from maskalign.encoders.dense import DenseViT


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    """OpenAI-layout CLIP, 32 px, patch 8 (a 4 x 4 grid), two blocks of width 64; every weight perturbed."""
    return fmts.clip(tmp_path_factory.mktemp("clip"), openai=True)


def _open_clip_maps(visual: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Block 0's patch tokens (no norm) and the last block's after ``ln_post``, as open_clip computes them."""
    first = visual.forward_intermediates(x, indices=[0], intermediates_only=True)["image_intermediates"][0]
    last = visual.forward_intermediates(x, indices=[1], normalize_intermediates=True,
                                        intermediates_only=True)["image_intermediates"][0]
    return first, last


def test_clip_norm_pre_is_not_the_identity(clip_file) -> None:
    """The premise: a CLIP encoder's ``norm_pre`` is a perturbed LayerNorm, so skipping it changes the maps."""
    path, ref = clip_file
    model = load_encoder(f"{path}#num_heads=2").model
    assert isinstance(model.norm_pre, torch.nn.LayerNorm)
    torch.testing.assert_close(model.norm_pre.weight, ref.visual.ln_pre.weight)


def test_dense_clip_without_windows_equals_open_clip(clip_file) -> None:
    path, ref = clip_file
    model = load_encoder(f"{path}#num_heads=2").model
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        maps = DenseViT(model, window_size=0, out_indices=[0, 1])(x)
        first, last = _open_clip_maps(ref.visual, x)
    assert maps[0].shape == (2, fmts.DIM, 4, 4)
    torch.testing.assert_close(maps[0], first, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(maps[1], last, atol=1e-5, rtol=1e-5)


def test_dense_clip_window_equals_open_clips_block_on_that_window(clip_file) -> None:
    """A windowed block: open_clip's block 0 on ([CLS] after ln_pre, that window's tokens after ln_pre)."""
    path, ref = clip_file
    model = load_encoder(f"{path}#num_heads=2").model
    x = torch.randn(1, 3, 32, 32)
    win = 2
    v = ref.visual
    with torch.no_grad():
        out = DenseViT(model, window_size=win, global_blocks=[1], out_indices=[0])(x)[0]
        seq = v._embeds(x)  # conv1, [CLS], positions, ln_pre: open_clip's own stem
        prefix, tokens = seq[:, :1], seq[:, 1:].reshape(1, 4, 4, -1)
        for r, c in [(0, 0), (0, 1), (1, 1)]:
            window = tokens[:, r * win:(r + 1) * win, c * win:(c + 1) * win].reshape(1, win * win, -1)
            alone = v.transformer.resblocks[0](torch.cat([prefix, window], dim=1))[:, 1:]
            got = out[0, :, r * win:(r + 1) * win, c * win:(c + 1) * win].permute(1, 2, 0).reshape(win * win, -1)
            torch.testing.assert_close(got, alone[0], atol=1e-5, rtol=1e-5)


# --- position tables at the job's resolution ------------------------------------------------------------


def _timm_resampled(table: torch.Tensor, grid: int, prefix: int) -> torch.Tensor:
    from timm.layers import resample_abs_pos_embed

    return resample_abs_pos_embed(table, new_size=[grid, grid], num_prefix_tokens=prefix,
                                  interpolation="bicubic", antialias=True)


@pytest.mark.parametrize("size", [16, 64], ids=["down_4to2", "up_4to8"])
def test_clip_table_is_timms_resample_at_the_job_size(clip_file, size: int) -> None:
    path, ref = clip_file
    loaded = load_encoder(f"{path}#num_heads=2")
    table = ref.visual.positional_embedding.detach()[None]  # (1, 1 + 16, D): [CLS] row first
    expected = _timm_resampled(table, size // 8, prefix=1)
    model, _, _ = loaded.build(size)  # what the classification and dense jobs build at their size
    torch.testing.assert_close(model.pos_embed.detach(), expected, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(load_encoder(f"{path}#num_heads=2", img_size=size).model.pos_embed.detach(),
                               expected, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("size", [28, 112], ids=["down_4to2", "up_4to8"])
def test_dinov2_reg_table_is_timms_resample_at_the_job_size(tmp_path: Path, size: int) -> None:
    """DINOv2 with registers (patch 14, 56 px: a 4 x 4 grid): timm keeps no [CLS] row in the table."""
    path, ref = fmts.dinov2(tmp_path, registers=4, img_size=56)
    loaded = load_encoder(f"{path}#num_heads=2")
    prefix = 0 if ref.no_embed_class else ref.num_prefix_tokens
    expected = _timm_resampled(ref.pos_embed.detach(), size // 14, prefix=prefix)
    model, _, _ = loaded.build(size)
    torch.testing.assert_close(model.pos_embed.detach(), expected, atol=1e-6, rtol=1e-6)


def test_deit3_table_in_the_dense_jobs_state(tmp_path: Path) -> None:
    """The ADE20K and COCO jobs' timm-family state: the table at the crop size, resampled the timm way."""
    from coco_helpers import require_detectron2

    require_detectron2()
    from types import SimpleNamespace

    from maskalign.detection.timm_backbone import PREFIX, detectron2_state
    from maskalign.transfer.source import load_pretrained

    path, ref = fmts.deit3(tmp_path, img_size=64)
    src = load_pretrained(f"{path}#num_heads=2")
    net = SimpleNamespace(img_size=32, window_size=2, window_block_indexes=[])  # every block global
    cfg = SimpleNamespace(model=SimpleNamespace(backbone=SimpleNamespace(net=net)))
    state = detectron2_state(src, cfg)
    prefix = 0 if ref.no_embed_class else ref.num_prefix_tokens
    expected = _timm_resampled(ref.pos_embed.detach(), 32 // 8, prefix=prefix)  # 8 x 8 -> 4 x 4
    torch.testing.assert_close(state[PREFIX + "pos_embed"], expected, atol=1e-6, rtol=1e-6)


def test_mmseg_wrapper_gives_the_out_indices_maps_of_open_clip(clip_file) -> None:
    """ADE20K's timm-family backbone: the neck gets block 0 and the last block (after ``ln_post``)."""
    from ade20k_helpers import require_mmseg

    require_mmseg()
    from maskalign.segmentation.mmseg_import import import_mmseg

    import_mmseg()
    from maskalign.segmentation.timm_backbone import MaskalignTimmViT
    from maskalign.transfer.source import load_pretrained

    path, ref = clip_file
    src = load_pretrained(f"{path}#num_heads=2")
    bb = MaskalignTimmViT(src.arch, img_size=32, out_indices=[0, 1])
    bb._dense.model.load_state_dict(src.loaded.build(32)[0].state_dict())
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        maps = bb.eval()(x)
        first, last = _open_clip_maps(ref.visual, x)
    assert len(maps) == 2
    torch.testing.assert_close(maps[0], first, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(maps[1], last, atol=1e-5, rtol=1e-5)
