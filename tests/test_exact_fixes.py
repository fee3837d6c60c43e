"""The three deviations from the official code that issue 15 names, each pinned by a test that
fails on the old code: the ``bn`` target formula, LUT's EMA momentum index, and the head count
of an encoder file without its arch.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from maskalign.alignment import normalize_target
from maskalign.checkpoint import CheckpointError, export_encoder, infer_arch, load_encoder_state


def test_bn_target_is_the_official_formula() -> None:
    # OpenDriveLab/maskalign get_teacher: (y - y.mean()) / (y.var() + 1e-6) ** .5, where
    # torch's Tensor.var() is the unbiased (n - 1) estimate. Computed here with plain sums.
    g = torch.Generator().manual_seed(0)
    # 24 values (n / (n - 1) is 4 %) of variance ~1e-4 (eps 1e-6 vs 1e-5 is 0.5 % vs 5 %).
    y = torch.randn(2, 3, 4, generator=g, dtype=torch.float64) * 0.01 - 0.002
    n = y.numel()
    mean = y.sum() / n
    var = ((y - mean) ** 2).sum() / (n - 1)
    expected = (y - mean) / (var + 1e-6) ** 0.5
    torch.testing.assert_close(normalize_target(y, "bn").double(), expected, rtol=1e-5, atol=1e-5)


def _tiny_timm_state(dim: int, heads: int, depth: int = 2, img: int = 32, patch: int = 8) -> dict:
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    m = VisionTransformer(img_size=img, patch_size=patch, embed_dim=dim, depth=depth, num_heads=heads,
                          num_classes=0)
    return {k: v for k, v in m.state_dict().items() if not k.startswith("head.")}


def test_infer_arch_refuses_to_guess_the_demo_width() -> None:
    # The demo ViT is 96 wide with 3 heads (32 channels each): 96 // 64 would say 1 head.
    with pytest.raises(CheckpointError, match="96"):
        infer_arch(_tiny_timm_state(96, 3))


@pytest.mark.parametrize("dim,heads", [(192, 3), (384, 6), (768, 12), (1024, 16), (1280, 16)])
def test_infer_arch_knows_the_standard_widths(dim: int, heads: int) -> None:
    # timm's vit_{tiny,small,base,large}_patch16 and vit_huge_patch14: (width, heads) from timm itself.
    import timm

    name = {192: "vit_tiny_patch16_224", 384: "vit_small_patch16_224", 768: "vit_base_patch16_224",
            1024: "vit_large_patch16_224", 1280: "vit_huge_patch14_224"}[dim]
    with torch.device("meta"):
        m = timm.create_model(name, pretrained=False, num_classes=0)
    assert (m.embed_dim, m.blocks[0].attn.num_heads) == (dim, heads)
    state = {"patch_embed.proj.weight": torch.zeros(dim, 3, 16, 16), "pos_embed": torch.zeros(1, 197, dim),
             "blocks.0.mlp.fc1.weight": torch.zeros(4 * dim, dim), "cls_token": torch.zeros(1, 1, dim)}
    assert infer_arch(state)["num_heads"] == heads


def test_every_exported_encoder_file_carries_its_arch(tmp_path: Path) -> None:
    # pretrain_model.pth holds the encoder under "encoder.*": it gets a sidecar like encoder.pth's,
    # so a 3-head demo-width encoder read from it comes back with 3 heads and the same outputs.
    from maskalign.checkpoint import build_timm_vit

    state = _tiny_timm_state(96, 3)
    arch = {"img_size": 32, "patch_size": 8, "embed_dim": 96, "depth": 2, "num_heads": 3, "mlp_ratio": 4.0}
    full = {f"encoder.{k}": v for k, v in state.items()}
    full["decoder.weight"] = torch.ones(2, 2)
    export_encoder(tmp_path, state, {"arch": arch, "method": "mae"}, full)
    assert json.loads((tmp_path / "pretrain_model.json").read_text())["arch"] == arch
    x = torch.randn(2, 3, 32, 32)
    ref = build_timm_vit(arch, state).eval()(x)
    for name in ("encoder.pth", "pretrain_model.pth"):
        enc, meta = load_encoder_state(tmp_path / name)
        assert meta["arch"]["num_heads"] == 3, name
        torch.testing.assert_close(build_timm_vit(meta["arch"], enc).eval()(x), ref)
    (tmp_path / "pretrain_model.json").unlink()
    with pytest.raises(CheckpointError, match=r"pretrain_model\.pth.*96"):
        load_encoder_state(tmp_path / "pretrain_model.pth")


def test_attention_maps_loader_uses_the_sidecar_heads_and_refuses_to_guess(tmp_path: Path) -> None:
    # results/attention.py rebuilds the encoder for Figure 3: 3 heads from the sidecar, its
    # [CLS] attention equal to timm's own on the 3-head model; no sidecar at width 96 -> one line.
    from timm.models.vision_transformer import VisionTransformer

    from maskalign.results.attention import cls_attention, load_encoder

    state = _tiny_timm_state(96, 3)
    torch.save(state, tmp_path / "e.pth")
    with pytest.raises(CheckpointError, match=r"e\.pth.*96"):
        load_encoder(tmp_path / "e.pth")
    arch = {"img_size": 32, "patch_size": 8, "embed_dim": 96, "depth": 2, "num_heads": 3}
    (tmp_path / "e.json").write_text(json.dumps({"arch": arch}))
    enc = load_encoder(tmp_path / "e.pth")
    assert enc.model.blocks[-1].attn.num_heads == 3
    ref = VisionTransformer(num_classes=0, **arch).eval()
    ref.load_state_dict(state, strict=False)
    attn = ref.blocks[-1].attn
    attn.fused_attn = False
    seen: list[torch.Tensor] = []
    attn.attn_drop.register_forward_hook(lambda _m, _i, out: seen.append(out))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref.forward_features(x)
    torch.testing.assert_close(cls_attention(enc.model, x), seen[0][:, :, 0, 1:].mean(1).reshape(2, 4, 4))
