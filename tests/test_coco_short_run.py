"""A short COCO run is not all warm-up: the warm-up is clipped to a fifth of the run, with a note."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from coco_helpers import FAST, make_coco, make_encoder_ckpt, require_detectron2

require_detectron2()


def test_ten_iterations_warm_up_for_two() -> None:
    from maskalign.detection.configs import load_config

    cfg = load_config("mask_rcnn_vitdet_tiny_demo", ["train.max_iter=10"])
    assert cfg.lr_multiplier.warmup_length * 10 == pytest.approx(2.0)
    assert list(cfg.lr_multiplier.scheduler.milestones) == [8, 9]
    longer = load_config("mask_rcnn_vitdet_tiny_demo", ["train.max_iter=1000"])  # 10 of 1000: kept
    assert longer.lr_multiplier.warmup_length * 1000 == pytest.approx(10.0)


@pytest.mark.slow
def test_a_ten_iteration_coco_run_reaches_the_full_learning_rate(tmp_path: Path) -> None:
    from maskalign.tasks import JobSpec, TaskJob

    make_coco(tmp_path / "world")
    encoder = make_encoder_ckpt(tmp_path / "encoder")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        spec = JobSpec(task="coco", ckpt=str(encoder), output_root=str(tmp_path), run="short",
                       overrides=(*FAST, "train.max_iter=10"), options={"data": str(tmp_path / "world")})
        result = TaskJob(spec, "maskalign.detection.task")()
    finally:
        torch.set_num_threads(n)
    assert Path(result["record"]).is_file()
    rows = [json.loads(ln) for ln in (tmp_path / "coco" / "short" / "metrics.json").read_text().splitlines()
            if ln.strip().startswith("{")]
    lrs = {r["iteration"]: r["lr"] for r in rows if "lr" in r}
    base = max(lrs.values())
    assert lrs[0] < base and lrs[4] == pytest.approx(base)  # warmed up by iteration 2, not after the run
