"""Figures: the Table-4 mask-ratio curve and the Figure-3 attention maps are drawn, sized, and not blank."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from results_fixtures import fabricate
from timm.models.vision_transformer import VisionTransformer

from maskalign.results.attention import cls_attention, load_encoder, synthetic_images, to_tensor
from maskalign.results.render_all import make_tables

REPO = Path(__file__).resolve().parents[1]
MIN_STD = 10.0  # a blank (single-colour) PNG has std 0


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"_results_fig_{name}", REPO / "results" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("with_records", [True, False])
def test_mask_ratio_curve(tmp_path, with_records):
    root = tmp_path / "output"
    if with_records:
        fabricate(root)
    summary = make_tables(root, tmp_path / "tables", figures=True)
    png = tmp_path / "tables" / "fig_mask_ratio.png"
    assert png in summary.written
    px = pixels(png)
    assert px.shape == (400, 600, 3)
    assert px.std() > MIN_STD


def test_mask_ratio_curve_far_below_paper_uses_own_axis(tmp_path):
    from results_fixtures import put

    for ratio in (0, 40, 70, 90):
        put(
            tmp_path / "o",
            "finetune",
            f"ft-{ratio}",
            row=f"attentive-{ratio}",
            table="4",
            metrics={"top1": 30 + ratio / 10},
        )
    make_tables(tmp_path / "o", tmp_path / "t", figures=True)
    px = pixels(tmp_path / "t" / "fig_mask_ratio.png")
    assert px.shape == (400, 600, 3) and px.std() > MIN_STD


def _export(
    path: Path,
    embed: int = 64,
    depth: int = 2,
    heads: int = 4,
    img: int = 32,
    patch: int = 8,
    sidecar: bool = True,
    seed: int = 0,
) -> Path:
    torch.manual_seed(seed)
    model = VisionTransformer(
        img_size=img, patch_size=patch, embed_dim=embed, depth=depth, num_heads=heads, num_classes=0
    )
    torch.save(model.state_dict(), path)
    if sidecar:
        path.with_suffix(".json").write_text(
            json.dumps(
                {
                    "arch": {
                        "img_size": img,
                        "patch_size": patch,
                        "embed_dim": embed,
                        "depth": depth,
                        "num_heads": heads,
                    }
                }
            )
        )
    return path


def test_attention_equals_timm_unfused(tmp_path):
    enc = load_encoder(_export(tmp_path / "a.pth"))
    x = to_tensor(synthetic_images(3, 48), 32, enc.mean, enc.std)
    ours = cls_attention(enc.model, x)
    attn = enc.model.blocks[-1].attn
    attn.fused_attn = False  # timm's slow path passes the weights through attn_drop: capture them there
    captured = []
    attn.attn_drop.register_forward_hook(lambda _m, _i, out: captured.append(out))
    with torch.no_grad():
        enc.model.forward_features(x)
    expected = captured[0][:, :, 0, 1:].mean(dim=1).reshape(3, 4, 4)
    assert ours.shape == (3, 4, 4)
    torch.testing.assert_close(ours, expected)


def test_arch_inferred_without_sidecar(tmp_path, capsys):
    path = _export(tmp_path / "b.pth", embed=192, depth=3, heads=3, img=48, patch=16, sidecar=False)
    enc = load_encoder(path)
    m = enc.model
    assert (m.patch_embed.img_size, m.patch_embed.patch_size) == ((48, 48), (16, 16))
    assert (m.embed_dim, len(m.blocks), m.blocks[0].attn.num_heads) == (192, 3, 3)
    assert m.blocks[0].mlp.fc1.out_features == 4 * 192 and m.blocks[0].attn.qkv.bias is not None
    # the weights are the exported ones, not a fresh init
    torch.testing.assert_close(m.state_dict()["blocks.2.mlp.fc2.weight"],
                               torch.load(path, weights_only=True)["blocks.2.mlp.fc2.weight"])
    assert enc.arch["img_size"] == 48
    assert enc.label == "b" and "no sidecar" in capsys.readouterr().err


def test_attention_maps_script(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (40 + 8 * i, 56, 3), dtype=np.uint8)).save(images / f"im{i}.png")
    (images / "notes.txt").write_text("not an image")
    a = _export(tmp_path / "a.pth", seed=1)
    b = _export(tmp_path / "b.pth", embed=96, depth=3, heads=3, img=48, patch=16, seed=2)  # another size
    out = tmp_path / "fig.png"
    script = _script("attention_maps")
    args = script.get_args_parser().parse_args(
        ["--ckpt", str(a), "--ckpt", str(b), "--label", "A", "--images", str(images), "--out", str(out)]
    )
    assert script.main(args) == 0
    px = pixels(out)
    assert px.shape == (
        2 * 200,
        3 * 200,
        3,
    )  # rows: images; columns: image + one per checkpoint; 2 in at 100 dpi
    assert px.std() > MIN_STD
    # the default (demo-world) images also render
    args = script.get_args_parser().parse_args(
        ["--ckpt", str(a), "--num-images", "3", "--out", str(tmp_path / "s.png")]
    )
    assert script.main(args) == 0
    px = pixels(tmp_path / "s.png")
    assert px.shape == (3 * 200, 2 * 200, 3) and px.std() > MIN_STD


def test_attention_maps_script_refuses_bad_input_in_one_line(tmp_path, capsys):
    script = _script("attention_maps")
    not_vit = tmp_path / "cnn.pth"
    torch.save({"stem.0.weight": torch.zeros(4, 3, 3, 3)}, not_vit)
    for argv, needle in ((["--ckpt", str(not_vit)], "cnn.pth: no ViT encoder weights"),
                         (["--ckpt", str(_export(tmp_path / "a.pth")), "--images", str(tmp_path / "none")], "none")):
        args = script.get_args_parser().parse_args([*argv, "--out", str(tmp_path / "x.png")])
        assert script.main(args) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "x.png").exists()
