"""The evaluation path: mmseg's IoUMetric on hand-made cases, and the whole test loop with an oracle."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ade20k_helpers import require_mmseg
from PIL import Image

require_mmseg()

from maskalign.segmentation.train import to_record_metrics


def _metric(num_classes: int):
    from mmseg.evaluation import IoUMetric

    m = IoUMetric(iou_metrics=["mIoU"])
    m.dataset_meta = {"classes": tuple(f"c{i}" for i in range(num_classes))}
    return m


def _evaluate(metric, pairs) -> dict[str, float]:
    samples = [{"pred_sem_seg": {"data": torch.as_tensor(p)[None]}, "gt_sem_seg": {"data": torch.as_tensor(g)[None]}}
               for p, g in pairs]
    metric.process({}, samples)
    return metric.evaluate(len(samples))


def test_ground_truth_as_prediction_scores_100() -> None:
    rng = np.random.default_rng(0)
    pairs = []
    for _ in range(3):
        gt = rng.integers(0, 4, size=(16, 20))  # class 4 of 5 never occurs: NaN, left out of the mean
        gt[:2] = 255  # ignored pixels
        pairs.append((np.where(gt == 255, 0, gt), gt))
    out = _evaluate(_metric(5), pairs)
    assert out["mIoU"] == 100.0 and out["aAcc"] == 100.0 and out["mAcc"] == 100.0


def test_known_confusion_gives_the_hand_computed_iou() -> None:
    # 3 classes on 10 pixels (+2 ignored). gt:   0 0 0 0 1 1 1 2 2 2  255 255
    #                                       pred: 0 0 1 1 1 1 2 2 2 2    0   1
    gt = np.array([[0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 255, 255]])
    pred = np.array([[0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 0, 1]])
    # class 0: I=2, U=4 -> 0.5; class 1: I=2, U=5 -> 0.4; class 2: I=3, U=4 -> 0.75
    out = _evaluate(_metric(3), [(pred, gt)])
    assert out["mIoU"] == pytest.approx(100 * (0.5 + 0.4 + 0.75) / 3, abs=0.01)
    assert out["aAcc"] == pytest.approx(70.0)  # 7 of 10 counted pixels
    assert out["mAcc"] == pytest.approx(100 * (2 / 4 + 2 / 3 + 3 / 3) / 3, abs=0.01)
    assert to_record_metrics(out) == {"miou": out["mIoU"], "aacc": out["aAcc"], "macc": out["mAcc"]}


def test_oracle_through_the_test_loop_scores_100(tmp_path, tiny_demo_ade20k) -> None:
    """Demo copy -> ADE20KLayoutDataset -> test pipeline -> slide inference -> IoUMetric.

    The model's encode_decode is replaced by an oracle that reads each image's annotation file and
    returns it as one-hot logits (0 -> ignored, k -> class k-1, as reduce_zero_label does); the
    rest of the path (data, sliding window, resizing back, metric over the tree's classes) is the
    job's own.
    """
    from mmengine.runner import Runner

    from maskalign.segmentation.datasets import num_classes
    from maskalign.segmentation.train import load_seg_config

    root = tiny_demo_ade20k  # 12 validation pairs
    k = num_classes(root)
    cfg = load_seg_config("upernet_vit_tiny_demo_128")
    cfg.model.decode_head.num_classes = cfg.model.auxiliary_head.num_classes = k
    cfg.test_dataloader.dataset.data_root = str(root)
    cfg.test_dataloader.dataset.indices = 12
    cfg.work_dir = str(tmp_path)
    for key in ("train_dataloader", "train_cfg", "optim_wrapper", "param_scheduler", "val_dataloader", "val_cfg",
                "val_evaluator"):
        cfg.pop(key, None)
    cfg.default_hooks.pop("checkpoint")
    runner = Runner.from_cfg(cfg)
    model = runner.model
    seen = []

    def oracle(inputs, batch_img_metas):
        out = []
        for meta in batch_img_metas:
            seen.append(meta["seg_map_path"])
            lab = torch.as_tensor(np.array(Image.open(meta["seg_map_path"])), dtype=torch.long)
            lab = torch.nn.functional.interpolate(lab[None, None].float(), size=inputs.shape[2:], mode="nearest")[0, 0]
            lab = lab.long() - 1  # 0 ("other") -> -1: no class gets the pixel
            onehot = torch.zeros(k, *lab.shape)
            valid = lab >= 0
            onehot[lab[valid], valid.nonzero(as_tuple=True)[0], valid.nonzero(as_tuple=True)[1]] = 1.0
            out.append(onehot)
        return torch.stack(out)

    model.encode_decode = oracle
    metrics = runner.test()
    assert len(seen) == 12
    assert metrics["mIoU"] == 100.0 and metrics["aAcc"] == 100.0
    assert len(runner.test_dataloader.dataset.metainfo["classes"]) == k == 10
