"""COCO box and mask AP with detectron2's ``COCOEvaluator`` (pycocotools' COCOeval underneath).

The numbers the tables use are named here once: ``ap_box``/``ap_mask`` (AP at IoU .50:.95, in
percent, as the paper reports), and ``box_ap50``, ``box_ap75``, ``box_aps``, ``box_apm``,
``box_apl`` with their ``mask_*`` twins. COCOeval reports -1 (detectron2: NaN) for a size range
without any ground truth, which the demo world's small images lack at "large"; such entries are
left out of the record rather than written as NaN.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from maskalign.metric_names import Metric

_NAMES = {"AP": "ap", "AP50": "ap50", "AP75": "ap75", "APs": "aps", "APm": "apm", "APl": "apl"}
_TASKS = {"bbox": "box", "segm": "mask"}


def build_evaluator(dataset_name: str, output_dir: str | Path | None = None):
    """A COCOEvaluator for box and mask AP over ``dataset_name`` (all ranks gather on the main one)."""
    from detectron2.evaluation import COCOEvaluator

    return COCOEvaluator(
        dataset_name,
        tasks=("bbox", "segm"),
        distributed=True,
        output_dir=str(output_dir) if output_dir else None,
    )


def coco_metrics(results: dict[str, Any]) -> dict[str, float]:
    """detectron2's ``{"bbox": {"AP": ..}, "segm": {..}}`` -> the record's flat metric names."""
    out: dict[str, float] = {}
    for task, short in _TASKS.items():
        for k, v in (results.get(task) or {}).items():
            if k not in _NAMES or v is None or not math.isfinite(float(v)):
                continue
            out[f"{short}_{_NAMES[k]}"] = float(v)
    for short, headline in (("box", Metric.AP_BOX), ("mask", Metric.AP_MASK)):
        if f"{short}_ap" in out:
            out[str(headline)] = out.pop(f"{short}_ap")
    return out


def evaluate(cfg: Any, model, output_dir: str | Path) -> dict[str, float]:
    """Run the config's test loader through ``model`` and score it; returns :func:`coco_metrics`."""
    from detectron2.config import instantiate
    from detectron2.evaluation import inference_on_dataset
    from detectron2.utils import comm

    loader = instantiate(cfg.dataloader.test)
    names = cfg.dataloader.test.dataset.names
    name = names if isinstance(names, str) else names[0]
    evaluator = build_evaluator(name, Path(output_dir) / "inference")
    results = inference_on_dataset(model, loader, evaluator)
    return coco_metrics(results) if comm.is_main_process() else {}
