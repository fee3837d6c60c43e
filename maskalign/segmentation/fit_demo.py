"""The ADE20K demo config fitted to any encoder, and any short run's schedules clipped to its length.

The paper's recipes are made for one arch and stay so (a ViT-L under the ViT-B recipe is refused:
it needs its own recipe). The demo config (``upernet_vit_tiny_demo_128``) is a plumbing check on
the demo world, so it takes the encoder's arch: width, depth, heads, MLP ratio and patch (8 or 16:
the four maps keep the recipe's strides 4/8/16/32 through Feature2Pyramid's rescales), with the
four feature blocks spread over the depth as the recipe's 4/6/8/12 of 12, the neck and heads at
the encoder's width and layer decay over its depth. What cannot fit (another patch size) is one
line.

Any run shorter than its schedules (``train_cfg.max_iters=20``) gets them fitted to its length: a
warm-up that would take the whole run is cut to a fifth of it (the scheduler after it starts
there), validation and checkpoint intervals are capped, each with a note -- instead of a run spent
in warm-up, or mmengine's traceback for a scheduler whose end equals its begin.
"""

from __future__ import annotations

import math
from typing import Any

from maskalign.errors import ConfigError

DEMO_CONFIGS = ("upernet_vit_tiny_demo_128",)
RESCALES = {8: [2, 1, 0.5, 0.25], 16: [4, 2, 1, 0.5]}


def feature_blocks(depth: int) -> list[int]:
    """Four different blocks spread over ``depth`` as 4/6/8/12 of 12 (the last block always included)."""
    blocks = [max(0, math.ceil(f * depth) - 1) for f in (1 / 3, 1 / 2, 2 / 3, 1.0)]
    return blocks if len(set(blocks)) == 4 else list(range(depth - 4, depth))


def fit_demo_config(cfg: Any, arch: dict[str, Any], config_name: str) -> list[str]:
    """Set the demo config's backbone, neck, heads and layer decay to ``arch``; returns notes."""
    bb = cfg.model.backbone
    width, depth = int(arch["embed_dim"]), int(arch["depth"])
    heads, patch, mlp = int(arch["num_heads"]), int(arch["patch_size"]), float(arch.get("mlp_ratio", 4.0))
    # A /14 encoder (DINOv2) runs under the /16 layout, as under the ViT-B/16 recipe (check_arch): its
    # stride-14 maps feed the neck as they are and UperNet resizes every level to the first.
    patch = 16 if patch == 14 else patch
    if (int(bb["embed_dims"]), int(bb["num_layers"]), int(bb["num_heads"]), int(bb["patch_size"])) == (
            width, depth, heads, patch) and float(bb["mlp_ratio"]) == mlp:
        return []
    if depth < 4:
        raise ConfigError(f"{config_name}: the encoder has {depth} blocks; the demo's four feature maps come "
                           f"from four different blocks")
    if patch not in RESCALES:
        raise ConfigError(f"{config_name}: patch {patch} does not fit the demo's four maps at strides 4/8/16/32 "
                           f"(patch 8, 14 or 16 do); give a config made for this encoder")
    bb.update(embed_dims=width, num_layers=depth, num_heads=heads, patch_size=patch,
              mlp_ratio=int(mlp) if mlp.is_integer() else mlp, out_indices=feature_blocks(depth))
    cfg.model.neck.update(embed_dim=width, rescales=RESCALES[patch])
    cfg.model.decode_head["in_channels"] = [width] * 4
    if cfg.model.get("auxiliary_head") is not None:
        cfg.model.auxiliary_head["in_channels"] = width
    pw = cfg.optim_wrapper.get("paramwise_cfg")
    if pw is not None and "num_layers" in pw:
        pw["num_layers"] = depth
    return [f"{config_name}: fitted to the encoder: width {width}, depth {depth}, heads {heads}, patch {patch}, "
            f"feature blocks {feature_blocks(depth)}"]


def clip_schedules(cfg: Any) -> list[str]:
    """Fit ``param_scheduler`` into ``train_cfg.max_iters``; cap the validation and checkpoint intervals.

    A warm-up (the scheduler from iteration 0) that would take the whole run is cut to a fifth of
    it, and the scheduler after it starts there. Schedulers that merely end after the run are
    left as they are (a longer run resumed later continues them); none is removed."""
    train = cfg.get("train_cfg") or {}
    scheds = cfg.get("param_scheduler")
    if "max_iters" not in train:
        return []
    end, notes = int(train["max_iters"]), []
    if isinstance(scheds, list) and scheds:
        first = scheds[0]
        warm_end = first.get("end")
        if int(first.get("begin", 0)) == 0 and warm_end is not None and int(warm_end) >= end and len(scheds) > 1:
            cut = max(1, end // 5)
            notes.append(f"warm-up {first['type']} clipped to iterations 0-{cut} (it was 0-{warm_end}; the run has "
                         f"{end})")
            first["end"] = cut
            for s in scheds[1:]:
                if int(s.get("begin", 0)) >= cut and int(s.get("begin", 0)) <= int(warm_end):
                    s["begin"] = cut
    if int(train.get("val_interval", end)) > end:
        train["val_interval"] = end
    ckpt = (cfg.get("default_hooks") or {}).get("checkpoint")
    if ckpt is not None and int(ckpt.get("interval", end)) > end:
        ckpt["interval"] = end
    return notes
