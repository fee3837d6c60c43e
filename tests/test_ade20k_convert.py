"""Project encoder -> mmseg ViT backbone: exact key mapping and identical features."""

from __future__ import annotations

import pytest
import torch
from ade20k_helpers import require_mmseg

require_mmseg()

from maskalign.models import build_vit
from maskalign.models.pos_embed import resize_pos_embed
from maskalign.segmentation.convert import CheckpointError, check_fits, to_mmseg_backbone

IMG, PATCH = 64, 8
OUT_INDICES = [1, 2, 3, 5]


def _randomised_encoder():
    """The demo ViT with every tensor (biases and LayerNorms included) away from its init value."""
    torch.manual_seed(0)
    enc = build_vit("vit_tiny_demo", IMG, PATCH).eval()
    with torch.no_grad():
        for name, p in enc.named_parameters():
            if name != "pos_embed":
                p.add_(torch.randn_like(p) * 0.05)
    return enc


def _mmseg_backbone():
    from mmseg.models.backbones import MAE

    bb = MAE(img_size=(IMG, IMG), patch_size=PATCH, embed_dims=96, num_layers=6, num_heads=3, mlp_ratio=4,
             out_indices=OUT_INDICES, drop_path_rate=0.0, init_values=1.0, norm_cfg={"type": "LN", "eps": 1e-6})
    bb.init_weights()
    bb.eval()  # BEiT.train() returns None, so no chaining
    return bb


def _project_features(enc, x):
    outs = enc.forward_blocks(x)
    g = IMG // PATCH
    return [outs[i][:, 1:].reshape(x.shape[0], g, g, -1).permute(0, 3, 1, 2) for i in OUT_INDICES]


def test_converted_backbone_gives_the_same_features() -> None:
    """Block outputs at out_indices, [CLS] dropped, as B x C x H x W: equal to float tolerance.

    mmseg's MAE attention has relative position tables (at zero: they add nothing) and layer
    scales (init_values=1.0: they scale by one); everything else comes from the checkpoint.
    """
    enc = _randomised_encoder()
    bb = _mmseg_backbone()
    converted = to_mmseg_backbone(enc.state_dict(), grid=(IMG // PATCH,) * 2)
    check_fits(bb, converted)
    missing, unexpected = bb.load_state_dict(converted, strict=False)
    assert not unexpected
    # Only what no ViT checkpoint holds: the relative position tables (at zero) and the layer scales.
    assert all(k.endswith(("relative_position_bias_table", "relative_position_index", "gamma_1", "gamma_2"))
               for k in missing), missing
    for layer in bb.layers:
        assert torch.count_nonzero(layer.attn.relative_position_bias_table) == 0
        assert torch.all(layer.gamma_1 == 1) and torch.all(layer.gamma_2 == 1)
    x = torch.randn(2, 3, IMG, IMG)
    with torch.no_grad():
        ours = _project_features(enc, x)
        theirs = bb(x)
    assert len(theirs) == len(ours) == 4
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape == (2, 96, IMG // PATCH, IMG // PATCH)
        torch.testing.assert_close(b, a, atol=2e-5, rtol=1e-4)


def test_key_mapping_is_exact() -> None:
    enc = build_vit("vit_tiny_demo", IMG, PATCH)
    converted = to_mmseg_backbone(enc.state_dict())
    expected = {"cls_token", "pos_embed", "patch_embed.projection.weight", "patch_embed.projection.bias"}
    for i in range(6):
        expected |= {f"layers.{i}.{k}" for k in (
            "ln1.weight", "ln1.bias", "ln2.weight", "ln2.bias", "attn.qkv.weight", "attn.qkv.bias",
            "attn.proj.weight", "attn.proj.bias", "ffn.layers.0.0.weight", "ffn.layers.0.0.bias",
            "ffn.layers.1.weight", "ffn.layers.1.bias")}
    assert set(converted) == expected  # the final norm is dropped (final_norm=False)
    sd = enc.state_dict()
    assert torch.equal(converted["layers.3.ffn.layers.0.0.weight"], sd["blocks.3.mlp.fc1.weight"])
    assert torch.equal(converted["patch_embed.projection.weight"], sd["patch_embed.proj.weight"])


def test_pos_embed_resized_to_the_512px_grid() -> None:
    """A ViT-B/16 table of 14x14 (224 px) becomes 32x32 (512 px); [CLS] row kept."""
    pos = torch.randn(1, 1 + 14 * 14, 768)
    state = {"cls_token": torch.zeros(1, 1, 768), "pos_embed": pos,
             "patch_embed.proj.weight": torch.zeros(768, 3, 16, 16), "patch_embed.proj.bias": torch.zeros(768)}
    out = to_mmseg_backbone(state, grid=(32, 32))
    assert out["pos_embed"].shape == (1, 1 + 32 * 32, 768)
    torch.testing.assert_close(out["pos_embed"][:, :1], pos[:, :1])
    torch.testing.assert_close(out["pos_embed"], resize_pos_embed(pos, (32, 32)))


def test_foreign_keys_are_refused() -> None:
    enc = build_vit("vit_tiny_demo", IMG, PATCH)
    state = {**enc.state_dict(), "decoder_embed.weight": torch.zeros(4, 4)}
    with pytest.raises(CheckpointError, match="decoder_embed.weight"):
        to_mmseg_backbone(state)


def test_check_fits_names_a_mismatch() -> None:
    enc = build_vit("vit_tiny_demo", IMG, PATCH)
    bb = _mmseg_backbone()
    converted = to_mmseg_backbone(enc.state_dict())
    del converted["layers.2.ln1.weight"]
    with pytest.raises(CheckpointError, match="missing.*layers.2.ln1.weight"):
        check_fits(bb, converted)
