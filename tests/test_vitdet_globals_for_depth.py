"""ViTDet's global-attention blocks recomputed for an encoder whose depth differs from the config's.

ViTDet (Li et al., 2022) puts global attention in the last block of each quarter of the network:
blocks 2, 5, 8, 11 of ViT-B (12), 5, 11, 17, 23 of ViT-L (24), 7, 15, 23, 31 of ViT-H (32), as its
released configs list them; the lists below are those, and the same rule by hand for 8 and 16.
The layer-decay function must count the encoder's blocks too.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from coco_helpers import require_detectron2

require_detectron2()
pytestmark = pytest.mark.filterwarnings("ignore:Importing from timm.models.layers:FutureWarning")

from maskalign.detection import configs  # noqa: E402

GLOBALS = {8: [1, 3, 5, 7], 12: [2, 5, 8, 11], 16: [3, 7, 11, 15], 24: [5, 11, 17, 23], 32: [7, 15, 23, 31]}


def _arch(depth: int) -> dict:
    return {"img_size": 64, "patch_size": 8, "embed_dim": 96, "depth": depth, "num_heads": 3, "mlp_ratio": 4.0}


@pytest.mark.parametrize("depth", sorted(GLOBALS))
def test_global_blocks_follow_the_encoders_depth(depth: int) -> None:
    cfg = configs.load_config("mask_rcnn_vitdet_tiny_demo")  # built for 6 blocks
    assert cfg.model.backbone.net.depth == 6
    configs.fit_backbone(cfg, _arch(depth), source="test")
    net = cfg.model.backbone.net
    assert net.depth == depth
    assert [i for i in range(depth) if i not in net.window_block_indexes] == GLOBALS[depth]
    assert sorted(net.window_block_indexes) == [i for i in range(depth) if i not in GLOBALS[depth]]
    assert cfg.optimizer.params.lr_factor_func.keywords["num_layers"] == depth


def test_the_timm_family_wrapper_runs_those_blocks_globally(tmp_path: Path) -> None:
    """A DeiT III encoder of 8 blocks under the 6-block demo config: its dense wrapper's global set."""
    import encoder_formats as fmts
    from detectron2.config import instantiate

    from maskalign.detection.timm_backbone import fit_backbone
    from maskalign.transfer.source import load_pretrained

    path, _ = fmts.deit3(tmp_path, img_size=64, depth=8)
    src = load_pretrained(f"{path}#num_heads=2")
    cfg = configs.load_config("mask_rcnn_vitdet_tiny_demo")
    fit_backbone(cfg, src, origin=str(path))
    net = instantiate(cfg.model.backbone.net)
    assert net.dense.global_blocks == set(GLOBALS[8])
    assert net.dense.window_size == 8
