"""Every file in detectron_configs/ loads, and the MaskAlign schedule is the paper's arithmetic."""

from __future__ import annotations

from pathlib import Path

import pytest
from coco_helpers import require_detectron2

require_detectron2()
pytestmark = pytest.mark.filterwarnings("ignore:Importing from timm.models.layers:FutureWarning")

from maskalign.detection import configs  # noqa: E402

FILES = sorted(p.stem for p in configs.CONFIG_DIR.glob("mask_rcnn_*.py"))


def test_the_four_configs_exist() -> None:
    assert FILES == [
        "mask_rcnn_vitdet_b_100ep",
        "mask_rcnn_vitdet_b_25ep_maskalign",
        "mask_rcnn_vitdet_l_100ep",
        "mask_rcnn_vitdet_tiny_demo",
    ]


def test_the_configs_live_in_the_top_level_detectron_configs_folder() -> None:
    """Where ViTDet users look (detectron2's projects/ViTDet/configs/); the package reads the same files."""
    top = Path(__file__).resolve().parents[1] / "detectron_configs"
    assert sorted(p.stem for p in top.glob("mask_rcnn_*.py")) == FILES
    assert (top / "common" / "coco_loader_lsj.py").is_file()
    for name in FILES:
        assert (configs.CONFIG_DIR / f"{name}.py").resolve() == (top / f"{name}.py").resolve()


@pytest.mark.parametrize("name", FILES)
def test_config_loads(name: str) -> None:
    cfg = configs.load_config(name)
    assert cfg.dataloader.train.dataset.names == "coco_2017_train"
    assert cfg.dataloader.test.dataset.names == "coco_2017_val"
    assert cfg.model.backbone.out_channels == 256 and list(cfg.model.roi_heads.box_head.fc_dims) == [1024]
    sched = cfg.lr_multiplier.scheduler
    assert sched.num_updates == cfg.train.max_iter and max(sched.milestones) < cfg.train.max_iter


def test_maskalign_25ep_is_a_quarter_of_vitdet_with_warmup_reset() -> None:
    base, ma = (
        configs.load_config("mask_rcnn_vitdet_b_100ep"),
        configs.load_config("mask_rcnn_vitdet_b_25ep_maskalign"),
    )
    assert base.train.max_iter == 184375 and ma.train.max_iter == 46093
    assert list(ma.lr_multiplier.scheduler.milestones) == [40972, 44386]
    assert ma.lr_multiplier.warmup_length * ma.train.max_iter == pytest.approx(250)
    assert base.lr_multiplier.warmup_length * base.train.max_iter == pytest.approx(250)
    assert ma.optimizer.lr == 3e-4 and base.optimizer.lr == 1e-4
    assert ma.optimizer.params.lr_factor_func.keywords == {"num_layers": 12, "lr_decay_rate": 0.8}
    assert ma.model.backbone.net.drop_path_rate == 0.1
    assert ma.dataloader.train.total_batch_size == 64 and ma.train.amp.enabled


def test_vit_l_globals() -> None:
    net = configs.load_config("mask_rcnn_vitdet_l_100ep").model.backbone.net
    assert (net.embed_dim, net.depth, net.num_heads) == (1024, 24, 16)
    assert [i for i in range(24) if i not in net.window_block_indexes] == [5, 11, 17, 23]


def test_overriding_max_iter_rescales_the_schedule() -> None:
    cfg = configs.load_config("mask_rcnn_vitdet_b_25ep_maskalign", ["train.max_iter=1000"])
    s = cfg.lr_multiplier
    assert s.scheduler.num_updates == 1000 and list(s.scheduler.milestones) == [889, 963]
    assert s.warmup_length * 1000 == pytest.approx(250)


@pytest.mark.parametrize("max_iter", [1, 2])
def test_a_schedule_cut_to_one_or_two_iterations_builds(max_iter: int) -> None:
    """fvcore refuses a milestone at or past num_updates: a one-iteration smoke run keeps none."""
    from detectron2.config import instantiate

    cfg = configs.load_config("mask_rcnn_vitdet_b_25ep_maskalign", [f"train.max_iter={max_iter}"])
    sched = cfg.lr_multiplier.scheduler
    assert all(0 < m < max_iter for m in sched.milestones) and len(sched["values"]) == len(sched.milestones) + 1
    lr = instantiate(cfg.lr_multiplier)
    assert lr(0.0) > 0


def test_unknown_key_and_missing_file() -> None:
    with pytest.raises(configs.ConfigError, match="train.max_iters"):
        configs.load_config("mask_rcnn_vitdet_tiny_demo", ["train.max_iters=3"])
    with pytest.raises(configs.ConfigError, match="not found"):
        configs.load_config(str(Path("no_such_config.py")))
