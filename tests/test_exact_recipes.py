"""Numbers the shipped files produce, against independent sources: the layer-wise lr scales of the
fine-tuning recipes (MAE's ``decay ** (num_layers + 1 - layer_id)``, with each recipe's published
decay) and the ImageNet-A/-R class lists (the files timm ships in ``timm/data/_info``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from maskalign.config import config_dir, load_config
from maskalign.transfer import label_space as ls

REPO = Path(__file__).resolve().parents[1]
FT_CONFIGS = config_dir("finetune")

# recipe -> (depth of its ViT, layer decay as published: MAE FINETUNE.md, the MaskAlign paper and README)
RECIPES = {
    "mae_vitb16.yaml": (12, 0.65),
    "mae_vitl16.yaml": (24, 0.75),
    "maskalign_vitb16.yaml": (12, 0.6),
    "maskalign_vitb16_official.yaml": (12, 0.55),
    "maskalign_vitl16.yaml": (24, 0.75),
}


def _mae_layer_id(name: str, num_layers: int) -> int:
    """facebookresearch/mae util/lr_decay.py get_layer_id_for_vit."""
    if name in ("cls_token", "pos_embed") or name.startswith("patch_embed"):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return num_layers


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_layer_decay_of_the_shipped_recipes(recipe: str) -> None:
    from maskalign.transfer.classifier import build_classifier
    from maskalign.transfer.layer_decay import param_groups_lrd

    depth, decay = RECIPES[recipe]
    cfg = load_config(FT_CONFIGS / recipe, [], FT_CONFIGS)
    assert float(cfg.optim.layer_decay) == decay
    dim, heads = (768, 12) if depth == 12 else (1024, 16)
    arch = {"img_size": 224, "patch_size": 16, "embed_dim": dim, "depth": depth, "num_heads": heads, "mlp_ratio": 4.0}
    with torch.device("meta"):
        model = build_classifier(arch, 1000, kind="finetune", global_pool=cfg.model.global_pool)
    groups = param_groups_lrd(model, float(cfg.optim.weight_decay), float(cfg.optim.layer_decay))
    names = {id(p): n for n, p in model.named_parameters()}
    num_layers = depth + 1  # MAE: num_layers = len(model.blocks) + 1
    seen = 0
    for g in groups:
        for p in g["params"]:
            n = names[id(p)]
            assert g["lr_scale"] == pytest.approx(decay ** (num_layers - _mae_layer_id(n, num_layers))), n
            seen += 1
    assert seen == sum(1 for p in model.parameters() if p.requires_grad)
    scales = {names[id(p)]: g["lr_scale"] for g in groups for p in g["params"]}
    # spot values, by hand: the patch embedding gets decay^(depth+1), the last block decay^1, the head 1
    assert scales["patch_embed.proj.weight"] == pytest.approx(decay ** (depth + 1))
    assert scales[f"blocks.{depth - 1}.mlp.fc2.weight"] == pytest.approx(decay)
    assert scales["head.weight"] == 1.0


def _timm_info(name: str) -> list[str]:
    import timm

    path = Path(timm.__file__).parent / "data" / "_info" / name
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


@pytest.mark.parametrize("subset", ["imagenet_a", "imagenet_r"])
def test_robustness_lists_equal_the_files_timm_ships(subset: str) -> None:
    assert ([int(x) for x in ls.read_class_list(f"{subset}_indices")]
            == [int(x) for x in _timm_info(f"{subset}_indices.txt")])
    assert list(ls.read_class_list(f"{subset}_wnids")) == _timm_info(f"{subset}_synsets.txt")
    assert list(ls.read_class_list("imagenet_wnids")) == _timm_info("imagenet_synsets.txt")
    space = ls.imagenet1k()
    assert space.subset_indices(subset) == [int(x) for x in _timm_info(f"{subset}_indices.txt")]
    full = _timm_info("imagenet_synsets.txt")
    assert [full[i] for i in space.subset_indices(subset)] == _timm_info(f"{subset}_synsets.txt")
