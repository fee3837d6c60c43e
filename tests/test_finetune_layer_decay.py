"""Layer-wise lr decay: every parameter's lr follows MAE's ``param_groups_lrd`` formula."""

from __future__ import annotations

import pytest
import torch

from maskalign.engine.optim import cosine_lr, set_lr
from maskalign.transfer.classifier import build_classifier
from maskalign.transfer.layer_decay import param_groups_lrd

ARCH = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 4, "num_heads": 2, "mlp_ratio": 2.0}


def _mae_layer_id(name: str, depth: int) -> int:
    """MAE util/lr_decay.py get_layer_id_for_vit, restated for the test."""
    if name in ("cls_token", "pos_embed") or name.startswith("patch_embed"):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return depth + 1


@pytest.mark.parametrize("pool", ["avg", "token"])
@pytest.mark.parametrize("decay", [0.6, 0.55, 0.75])
def test_each_parameter_gets_blr_times_decay_power(pool: str, decay: float) -> None:
    model = build_classifier(ARCH, 7, kind="finetune", global_pool=pool)
    depth = ARCH["depth"]
    groups = param_groups_lrd(model, weight_decay=0.05, layer_decay=decay)
    opt = torch.optim.AdamW(groups, lr=1.0)
    blr, batch = 3e-4, 1024
    lr = blr * batch / 256
    set_lr(opt, cosine_lr(7.0, lr, 1e-6, 5, 100))  # any point of the schedule: scales multiply it
    sched = cosine_lr(7.0, lr, 1e-6, 5, 100)
    names = {id(p): n for n, p in model.named_parameters()}
    seen = set()
    for g in opt.param_groups:
        for p in g["params"]:
            n = names[id(p)]
            seen.add(n)
            scale = decay ** (depth + 1 - _mae_layer_id(n, depth))
            assert g["lr"] == pytest.approx(sched * scale), n
            no_wd = p.ndim == 1 or n in ("pos_embed", "cls_token")
            assert g["weight_decay"] == (0.0 if no_wd else 0.05), n
    assert seen == {n for n, p in model.named_parameters() if p.requires_grad}
    by_name = {names[id(p)]: g["lr"] for g in opt.param_groups for p in g["params"]}
    assert by_name["head.weight"] == pytest.approx(sched)
    assert by_name["patch_embed.proj.weight"] == pytest.approx(sched * decay ** (depth + 1))
    assert by_name["blocks.0.attn.qkv.weight"] == pytest.approx(sched * decay ** depth)
    assert by_name["blocks.3.mlp.fc2.weight"] == pytest.approx(sched * decay)
    if pool == "token":  # the final norm sits with the head at scale 1 (MAE), not one layer below
        assert by_name["norm.weight"] == pytest.approx(sched)
    else:
        assert by_name["fc_norm.weight"] == pytest.approx(sched)


def test_agrees_with_timm_under_global_pooling() -> None:
    """The fine-tuning recipe (avg pool, no final norm): timm's grouping gives the same scales."""
    from timm.optim import param_groups_layer_decay

    model = build_classifier(ARCH, 7, kind="finetune", global_pool="avg")
    ours = {n: g["lr_scale"] for g in param_groups_lrd(model, 0.05, 0.65) for n in g["param_names"]}
    names = {id(p): n for n, p in model.named_parameters()}
    theirs = {names[id(p)]: g["lr_scale"]
              for g in param_groups_layer_decay(model, 0.05, model.no_weight_decay(), layer_decay=0.65)
              for p in g["params"]}
    assert ours.keys() == theirs.keys()
    assert all(ours[n] == pytest.approx(theirs[n]) for n in ours)
