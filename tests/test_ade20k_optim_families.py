"""ADE20K layer decay for the timm-family backbone wrapper: registers, distillation token and CLIP's
pre-norm are stem tensors (lr x rate^(depth+1)), with timm's weight-decay exemptions.

The rule is written out here by hand, as MAE's ``param_groups_lrd`` / BEiT's layer ids state it
(stem 0, block ``i`` ``i + 1``, the rest ``depth + 1``; CLIP's ``ln_pre`` in the stem as FT-CLIP
does), and the no-decay names are the timm model's own ``no_weight_decay()``.
"""

from __future__ import annotations

from pathlib import Path

import encoder_formats as fmts
import pytest
from ade20k_helpers import require_mmseg

require_mmseg()

from torch import nn  # noqa: E402

LR, WD, RATE = 1e-4, 0.05, 0.65


def _expected_layer(name: str, depth: int) -> int:
    rest = name.removeprefix("backbone.")
    if rest != name:
        if rest in ("cls_token", "reg_token", "dist_token", "pos_embed") or rest.startswith(("patch_embed.",
                                                                                           "norm_pre.")):
            return 0
        if rest.startswith("layers."):
            return int(rest.split(".")[1]) + 1
    return depth + 1


def _segmentor(tmp_path: Path, family: str) -> tuple[nn.Module, set[str], int]:
    from mmengine.registry import init_default_scope

    from maskalign.segmentation.mmseg_import import import_mmseg

    import_mmseg()
    init_default_scope("mmseg")
    from maskalign.segmentation.timm_backbone import MaskalignTimmViT
    from maskalign.transfer.source import load_pretrained

    writer = {"clip": lambda: fmts.clip(tmp_path, openai=True), "dinov2_reg": lambda: fmts.dinov2(tmp_path, 4),
              "deit_distilled": lambda: fmts.deit_distilled(tmp_path)}[family]
    path, _ = writer()
    src = load_pretrained(f"{path}#num_heads=2")
    size = int(src.arch["img_size"])
    bb = MaskalignTimmViT(src.arch, img_size=size, out_indices=[0, 1])
    seg = nn.Module()
    seg.backbone = bb
    seg.decode_head = nn.Linear(fmts.DIM, 4)
    return seg, set(bb._dense.model.no_weight_decay()), len(bb.layers)


@pytest.mark.parametrize("family,stem", [("clip", "norm_pre.weight"), ("dinov2_reg", "reg_token"),
                                         ("deit_distilled", "dist_token")])
def test_every_parameter_gets_the_stem_or_block_lr_and_timms_weight_decay(tmp_path: Path, family: str,
                                                                          stem: str) -> None:
    from mmengine.optim import build_optim_wrapper

    seg, no_wd, depth = _segmentor(tmp_path, family)
    params = dict(seg.named_parameters())
    assert f"backbone.{stem}" in params  # the family's extra stem tensor is there
    wrapper = build_optim_wrapper(seg, {"type": "OptimWrapper", "constructor": "ViTLayerDecayOptimizerConstructor",
                                        "optimizer": {"type": "AdamW", "lr": LR, "weight_decay": WD},
                                        "paramwise_cfg": {"num_layers": depth, "layer_decay_rate": RATE}})
    ids = {id(p): n for n, p in params.items()}
    by_name = {ids[id(p)]: g for g in wrapper.optimizer.param_groups for p in g["params"]}
    assert set(by_name) == set(params)
    for name, p in params.items():
        g = by_name[name]
        lid = _expected_layer(name, depth)
        assert g["lr"] == pytest.approx(LR * RATE ** (depth + 1 - lid), rel=1e-12), name
        short = name.removeprefix("backbone.")
        exempt = p.ndim <= 1 or name.endswith(".bias") or (name.startswith("backbone.") and short in no_wd)
        assert g["weight_decay"] == (0.0 if exempt else WD), name
    assert by_name[f"backbone.{stem}"]["lr"] == pytest.approx(LR * RATE ** (depth + 1))
    assert by_name[f"backbone.{stem}"]["weight_decay"] == 0.0
