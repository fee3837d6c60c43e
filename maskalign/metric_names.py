"""The names of the metrics in ``record.json``: written by the jobs, read back by the tables.

One constant per number, so a writer and the table that shows it cannot drift apart (DINOv2's
``MetricType`` habit). A new task adds its own names here, or declares them beside its task
(``Task.metrics``); the record stores the plain string value.
"""

from __future__ import annotations

from enum import StrEnum


class Metric(StrEnum):
    """A record metric; ``str(Metric.TOP1) == "top1"``, and it serialises as that string."""

    # classification (finetune, linprobe): percent on the validation split
    TOP1 = "top1"
    TOP5 = "top5"
    BEST_TOP1 = "best_top1"
    BEST_EPOCH = "best_epoch"
    # COCO (detectron2's COCOEvaluator, AP at IoU .50:.95, percent)
    AP_BOX = "ap_box"
    AP_MASK = "ap_mask"
    # ADE20K (mmseg's IoUMetric, percent)
    MIOU = "miou"
    AACC = "aacc"
    MACC = "macc"
    # robustness: top-1 on each ImageNet variant, mean corruption error on ImageNet-C
    IN1K_TOP1 = "in1k_top1"
    IN_A_TOP1 = "in_a_top1"
    IN_R_TOP1 = "in_r_top1"
    IN_SKETCH_TOP1 = "in_sketch_top1"
    IN_V2_TOP1 = "in_v2_top1"
    IN_C_MCE = "in_c_mce"
    # pre-training and its speed
    FINAL_LOSS = "final_loss"
    SEC_PER_ITER = "sec_per_iter"
    IMAGES_PER_S = "images_per_s"


#: Per-corruption ImageNet-C error: ``in_c_ce/<corruption name>``.
IN_C_CE_PREFIX = "in_c_ce/"


def in_c_ce(corruption: str) -> str:
    """The metric name of one corruption's error."""
    return f"{IN_C_CE_PREFIX}{corruption}"
