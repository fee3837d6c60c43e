"""Layer-wise lr decay for ViT fine-tuning, with the exact semantics of MAE's ``param_groups_lrd``.

BEiT introduced it and MAE / MaskAlign fine-tune with it (``util/lr_decay.py``, byte-identical in
both repositories): with ``L`` blocks, parameter ``p`` gets the lr ``lr * decay ** (L + 1 - id(p))``
where ``id`` is 0 for ``cls_token``, ``pos_embed`` and ``patch_embed`` (and the other families'
stem tensors: registers, distillation token, CLIP's pre-norm), ``i + 1`` for ``blocks.i`` (BEiT's
relative position tables and every family's layer scales included),
and ``L + 1`` (scale 1) for everything else -- the final ``norm``, ``fc_norm`` and the head.
1-D tensors and ``model.no_weight_decay()`` get no weight decay.

Why not ``timm.optim.param_groups_layer_decay``: its group matcher gives the final ``norm`` a layer
of its own below the head, so with a [CLS]-token head (``norm`` present) that norm is scaled by
``decay`` instead of 1. It agrees with MAE for the global-pool recipe (``norm`` absent); the tests
check this module against the formula for both heads.
"""

from __future__ import annotations

import re

from torch import nn

_BLOCK = re.compile(r"^blocks\.(\d+)\.")
# ``norm_pre`` (CLIP's ln_pre) normalises the patch embeddings before block 0: it belongs to the stem,
# as in FT-CLIP's layer ids (timm's group matcher files it with the final norm instead).
_STEM = ("cls_token", "pos_embed", "patch_embed", "reg_token", "dist_token", "norm_pre")


def layer_id(name: str, depth: int) -> int:
    """MAE's ``get_layer_id_for_vit``: 0 stem, ``i + 1`` block ``i``, ``depth + 1`` the rest."""
    if name.split(".")[0] in _STEM:
        return 0
    m = _BLOCK.match(name)
    if m:
        return int(m.group(1)) + 1
    return depth + 1


def param_groups_lrd(model: nn.Module, weight_decay: float, layer_decay: float,
                     no_weight_decay: set[str] | None = None) -> list[dict]:
    """Optimizer groups ``layer_<id>_<decay|no_decay>``, each with its ``lr_scale``.

    Args:
        model: a timm ``VisionTransformer`` (anything with ``blocks.<i>.`` parameter names).
        weight_decay: for 2-D+ weights not listed in ``no_weight_decay``.
        layer_decay: the per-block lr factor (1.0 switches layer decay off).
        no_weight_decay: names without weight decay (default: ``model.no_weight_decay()``).

    Frozen parameters are left out. ``set_lr`` (maskalign.engine.optim) multiplies the scheduled
    lr by each group's ``lr_scale``.
    """
    skip = set(no_weight_decay if no_weight_decay is not None
               else (model.no_weight_decay() if hasattr(model, "no_weight_decay") else ()))
    depth = len(model.blocks)  # type: ignore[arg-type]
    groups: dict[str, dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = p.ndim == 1 or name in skip
        lid = layer_id(name, depth)
        key = f"layer_{lid}_{'no_decay' if no_decay else 'decay'}"
        if key not in groups:
            groups[key] = {"params": [], "param_names": [], "weight_decay": 0.0 if no_decay else weight_decay,
                           "lr_scale": layer_decay ** (depth + 1 - lid), "name": key}
        groups[key]["params"].append(p)
        groups[key]["param_names"].append(name)
    return list(groups.values())
