"""Each published ViT family, saved in its official layout, loads to exactly its reference model.

For every family the tokens of ``load_encoder(file).model.forward_features`` equal the family's
own implementation holding the original weights -- at the stored resolution, and at another one
where the reference resizes its position table its own way (timm's ``dynamic_img_size`` path,
open_clip's ``resize_pos_embed``, BEiT's relative-table resize).
"""

from __future__ import annotations

from pathlib import Path

import encoder_formats as fmts
import pytest
import torch

from maskalign.encoders import load_encoder

ATOL = 1e-5


def _same(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.shape == b.shape
    assert torch.allclose(a, b, atol=ATOL, rtol=1e-5), (a - b).abs().max()


def _dynamic(ref: torch.nn.Module, name: str, native: int, **kw) -> torch.nn.Module:
    """The reference at any input size: timm's own model with ``dynamic_img_size`` and the original weights."""
    import timm

    kw = {"embed_dim": fmts.DIM, **kw}
    m = timm.create_model(name, pretrained=False, img_size=native, depth=2, num_heads=fmts.HEADS, num_classes=0,
                          dynamic_img_size=True, **kw)
    m.load_state_dict(ref.state_dict())
    return m.eval()


def _mae_resized(ref: torch.nn.Module, name: str, native: int, other: int, **kw) -> torch.nn.Module:
    """MAE / DINO (v1) at another size: their own ``interpolate_pos_embed`` (bicubic, no antialias,
    [CLS] row kept), written out here as MAE's ``util/pos_embed.py`` does it."""
    import timm
    import torch.nn.functional as F

    sd = dict(ref.state_dict())
    pe = sd["pos_embed"]
    g, n = int((pe.shape[1] - 1) ** 0.5), other // kw["patch_size"]
    grid = pe[:, 1:].reshape(1, g, g, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(n, n), mode="bicubic", align_corners=False)
    sd["pos_embed"] = torch.cat([pe[:, :1], grid.permute(0, 2, 3, 1).flatten(1, 2)], dim=1)
    m = timm.create_model(name, pretrained=False, img_size=other, depth=2, embed_dim=fmts.DIM,
                          num_heads=fmts.HEADS, num_classes=0, **kw)
    m.load_state_dict(sd)
    return m.eval()


TIMM_CASES = {
    # family: (writer, timm name of the reference, native px, other px, reference kwargs, expected family)
    "mae": (fmts.mae, "vit_base_patch16_224", 32, 48, {"patch_size": 8}, "vit"),
    "maskalign": (fmts.maskalign_release, "vit_base_patch16_224", 32, 48, {"patch_size": 8}, "vit"),
    "dino": (fmts.dino, "vit_small_patch16_224", 32, 48, {"patch_size": 8}, "vit"),
    "dinov2": (fmts.dinov2, "vit_small_patch14_dinov2", 56, 28, {}, "dinov2"),
    "dinov2_reg": (lambda t: fmts.dinov2(t, registers=4), "vit_small_patch14_reg4_dinov2", 56, 28,
                   {"reg_tokens": 4}, "dinov2_reg"),
    "dinov2_giant_swiglu": (fmts.dinov2_giant, "vit_giant_patch14_dinov2", 56, 28, {"embed_dim": 96}, "dinov2"),
    "deit3": (fmts.deit3, "deit3_small_patch16_224", 32, 48, {"patch_size": 8}, "deit3"),
    "deit_distilled": (fmts.deit_distilled, "deit_tiny_distilled_patch16_224", 32, 48, {"patch_size": 8},
                       "deit_distilled"),
}


@pytest.mark.parametrize("case", sorted(TIMM_CASES))
def test_timm_family_file_equals_reference(tmp_path: Path, case: str) -> None:
    write, name, native, other, kw, family = TIMM_CASES[case]
    path, ref = write(tmp_path)
    enc = load_encoder(f"{path}#num_heads={fmts.HEADS}")
    assert enc.family == family and enc.meta["arch"]["img_size"] == native
    x = torch.randn(2, 3, native, native)
    with torch.no_grad():
        _same(enc.model.forward_features(x), ref.forward_features(x))
    other_enc = load_encoder(f"{path}#num_heads={fmts.HEADS}", img_size=other)
    y = torch.randn(2, 3, other, other)
    with torch.no_grad():
        expected = (_mae_resized(ref, name, native, other, **kw) if family == "vit"
                    else _dynamic(ref, name, native, **kw))
        _same(other_enc.model.forward_features(y), expected.forward_features(y))
    assert not [k for k in enc.report.used if "decoder" in k or "teacher" in k]


def test_dropped_tensors_are_named_with_reasons(tmp_path: Path) -> None:
    path, _ = fmts.maskalign_release(tmp_path)
    report = load_encoder(f"{path}#num_heads={fmts.HEADS}").report.as_dict()
    assert report["dropped"]["clip_model.*"]["reason"] == "frozen teacher of pre-training"
    assert set(report["dropped"]) == {"clip_model.*", "distill_heads.*", "distill_weights"}
    assert report["used"]["blocks.*"] == 2 * 12  # both blocks, every tensor


@pytest.mark.parametrize("shared", [False, True], ids=["beitv2_per_block", "beit_shared_table"])
def test_beit_file_equals_reference(tmp_path: Path, shared: bool) -> None:
    import timm
    from timm.models.beit import checkpoint_filter_fn

    path, ref = fmts.beit(tmp_path, shared=shared)
    enc = load_encoder(f"{path}#num_heads={fmts.HEADS}")
    assert enc.family == "beit"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        _same(enc.model.forward_features(x), ref.forward_features(x))
    # another size: timm's BEiT built for it, the table resized by timm's own filter from the original weights
    kw = {"use_shared_rel_pos_bias": True, "use_rel_pos_bias": False} if shared else {}
    big = timm.create_model("beitv2_base_patch16_224", img_size=48, patch_size=8, depth=2, embed_dim=fmts.DIM,
                            num_heads=fmts.HEADS, num_classes=0, global_pool="token", **kw).eval()
    big.load_state_dict(checkpoint_filter_fn(dict(ref.state_dict()), big))
    y = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        _same(load_encoder(f"{path}#num_heads={fmts.HEADS}", img_size=48).model.forward_features(y),
              big.forward_features(y))
    dropped = enc.report.as_dict()["dropped"]
    assert {"lm_head", "mask_token", "cls_pt_layers.*"} <= set(dropped)


@pytest.mark.parametrize("openai", [True, False], ids=["openai", "open_clip"])
def test_clip_file_equals_open_clip(tmp_path: Path, openai: bool) -> None:

    path, ref = fmts.clip(tmp_path, openai=openai)
    spec = f"{path}#num_heads={fmts.HEADS}" + ("" if openai else ",act=gelu")
    enc = load_encoder(spec)
    assert enc.family == ("clip_quickgelu" if openai else "clip")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        embedding = ref.encode_image(x)
        ref.visual.output_tokens = True
        tokens = enc.model.forward_features(x)
        _, patch_tokens = ref.visual(x)
        _same(tokens[:, 1:], patch_tokens)
        _same(tokens[:, 0] @ ref.visual.proj, embedding)
    dropped = enc.report.as_dict()["dropped"]
    assert dropped["visual.proj"]["reason"].startswith("CLIP image projection")
    assert dropped["transformer.resblocks.*"]["reason"] == "CLIP text tower"


def test_clip_at_another_resolution_equals_open_clip_resize(tmp_path: Path) -> None:
    from open_clip.model import resize_pos_embed

    path, ref = fmts.clip(tmp_path, openai=True)
    big = fmts.open_clip_model(quick_gelu=True, image_size=48)
    sd = {k: v for k, v in ref.state_dict().items()}
    resize_pos_embed(sd, big)  # open_clip's own interpolation for a tower run at another size
    big.load_state_dict(sd)
    big.eval().visual.output_tokens = True
    y = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        _, patch_tokens = big.visual(y)
        _same(load_encoder(f"{path}#num_heads={fmts.HEADS}", img_size=48).model.forward_features(y)[:, 1:],
              patch_tokens)


def test_clip_without_activation_is_refused(tmp_path: Path) -> None:
    path, _ = fmts.clip(tmp_path, openai=False)
    with pytest.raises(Exception, match="act=quickgelu") as e:
        load_encoder(path)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("name,kw", [("vit_small_patch14_reg4_dinov2", {"img_size": 56}),
                                     ("vit_base_patch16_clip_224", {"img_size": 32, "patch_size": 8}),
                                     ("deit3_small_patch16_224", {"img_size": 32, "patch_size": 8})])
def test_timm_checkpoint_equals_timm(tmp_path: Path, name: str, kw: dict) -> None:
    """timm's own files: a bare ``state_dict()`` with head, and train.py's ``{"arch", "state_dict"}``."""
    ref = fmts.timm_model(name, **kw)
    torch.save({"arch": name, "state_dict": {**ref.state_dict(), "head.weight": torch.zeros(3, fmts.DIM)}},
               tmp_path / "train.pth.tar")
    torch.save(dict(ref.state_dict()), tmp_path / "bare.pth")
    x = torch.randn(1, 3, kw["img_size"], kw["img_size"])
    for spec in (f"{tmp_path / 'train.pth.tar'}#num_heads={fmts.HEADS}",
                 f"{tmp_path / 'bare.pth'}#num_heads={fmts.HEADS}" + (",act=gelu" if "clip" in name else "")):
        with torch.no_grad():
            _same(load_encoder(spec).model.forward_features(x), ref.forward_features(x))
