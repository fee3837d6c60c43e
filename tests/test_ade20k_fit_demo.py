"""The ADE20K demo config fits any encoder, and a short run's warm-up is clipped to the run.

Unit checks of the fitted config (fast), then (``slow``) a 20-iteration ADE20K demo run from a
width-384 patch-16 encoder in timm's layout, with the docs' short-run override that used to end in
mmengine's traceback (warm-up end equal to its begin).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from ade20k_helpers import require_mmseg, run_cli
from encoder_formats import timm_model

from maskalign.segmentation.fit_demo import ConfigError, clip_schedules, feature_blocks, fit_demo_config


def _demo_cfg():
    require_mmseg()
    from maskalign.segmentation.train import load_seg_config, resolve_config

    return load_seg_config(resolve_config("upernet_vit_tiny_demo_128"), ["train_cfg.max_iters=20"])


def test_demo_config_takes_the_encoders_arch() -> None:
    cfg = _demo_cfg()
    arch = {"embed_dim": 384, "depth": 12, "num_heads": 6, "patch_size": 16, "mlp_ratio": 4.0}
    assert fit_demo_config(cfg, arch, "demo")
    bb = cfg.model.backbone
    assert (bb.embed_dims, bb.num_layers, bb.num_heads, bb.patch_size) == (384, 12, 6, 16)
    assert list(bb.out_indices) == [3, 5, 7, 11]  # the recipe's blocks 4/6/8/12 of 12
    assert list(cfg.model.neck.rescales) == [4, 2, 1, 0.5] and cfg.model.neck.embed_dim == 384
    assert list(cfg.model.decode_head.in_channels) == [384] * 4 and cfg.model.auxiliary_head.in_channels == 384
    assert cfg.optim_wrapper.paramwise_cfg.num_layers == 12
    assert feature_blocks(6) == [1, 2, 3, 5]  # the demo config's own choice for its depth-6 encoder
    assert feature_blocks(4) == [0, 1, 2, 3]
    with pytest.raises(ConfigError, match="patch 12"):
        fit_demo_config(_demo_cfg(), {**arch, "patch_size": 12}, "demo")
    dinov2 = _demo_cfg()  # a /14 encoder takes the /16 layout, as under the ViT-B/16 recipe
    fit_demo_config(dinov2, {**arch, "patch_size": 14}, "demo")
    assert dinov2.model.backbone.patch_size == 16 and list(dinov2.model.neck.rescales) == [4, 2, 1, 0.5]


def test_a_warm_up_as_long_as_the_run_is_clipped_with_a_note() -> None:
    cfg = _demo_cfg()
    cfg.param_scheduler[1]["end"] = 20  # docs/ade20k.md's short run: poly from 20 to 20
    notes = clip_schedules(cfg)
    assert [(s["begin"], s["end"]) for s in cfg.param_scheduler] == [(0, 4), (4, 20)]
    assert len(notes) == 1 and "warm-up" in notes[0]
    assert cfg.train_cfg.val_interval == 20 and cfg.default_hooks.checkpoint.interval == 20


@pytest.mark.slow
def test_twenty_iterations_from_a_width_384_encoder(tmp_path: Path) -> None:
    require_mmseg()
    enc = timm_model("vit_small_patch16_224", 64, embed_dim=384, num_heads=6, depth=4, patch_size=16)
    ckpt = tmp_path / "vit_small_demo.pth"
    torch.save(enc.state_dict(), ckpt)
    out = tmp_path / "output"
    res = run_cli("--ckpt", str(ckpt), "--output-dir", str(out), "train_cfg.max_iters=20",
                  "param_scheduler.1.end=20", "+train_dataloader.dataset.indices=4",
                  "+val_dataloader.dataset.indices=4", "+test_dataloader.dataset.indices=4", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "fitted to the encoder: width 384, depth 4, heads 6, patch 16" in res.stdout
    assert "warm-up LinearLR clipped" in res.stdout
    record = json.loads((out / "ade20k" / "vit_small_demo-upernet_vit_tiny_demo_128" / "record.json").read_text())
    assert record["metrics"]["miou"] >= 0
