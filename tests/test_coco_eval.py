"""The evaluation path: ground truth fed back as predictions scores AP 100, box and mask."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from coco_helpers import make_coco, require_detectron2

require_detectron2()
pytestmark = [
    pytest.mark.filterwarnings("ignore:Importing from timm.models.layers:FutureWarning"),
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:torch.meshgrid:UserWarning"),
]

from maskalign.detection import datasets  # noqa: E402
from maskalign.detection.evaluate import build_evaluator, coco_metrics  # noqa: E402


def _gt_as_predictions(d: dict):
    from detectron2.structures import Boxes, BoxMode, Instances, polygons_to_bitmask

    h, w = d["height"], d["width"]
    anns = d["annotations"]
    inst = Instances((h, w))
    inst.pred_boxes = Boxes(
        torch.tensor(
            [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in anns], dtype=torch.float32
        ).reshape(-1, 4)
    )
    inst.scores = torch.ones(len(anns))
    inst.pred_classes = torch.tensor([a["category_id"] for a in anns], dtype=torch.int64)
    inst.pred_masks = torch.stack(
        [torch.from_numpy(polygons_to_bitmask(a["segmentation"], h, w)) for a in anns]
    )
    return inst


def test_ground_truth_as_predictions_scores_100(tmp_path: Path) -> None:
    from detectron2.data import DatasetCatalog

    src = datasets.CocoSource(make_coco(tmp_path / "world"), "demo")
    names = datasets.register(src)
    dicts = DatasetCatalog.get(names["val"])
    assert dicts and all(d["annotations"] for d in dicts)
    evaluator = build_evaluator(names["val"], tmp_path / "eval")
    evaluator.reset()
    for d in dicts:
        evaluator.process([{"image_id": d["image_id"]}], [{"instances": _gt_as_predictions(d)}])
    m = coco_metrics(evaluator.evaluate())
    assert m["ap_box"] == pytest.approx(100.0) and m["ap_mask"] == pytest.approx(100.0)
    for k in ("box_ap50", "box_ap75", "mask_ap50", "mask_ap75"):
        assert m[k] == pytest.approx(100.0), k
    assert all(v == pytest.approx(100.0) for v in m.values())  # size ranges without objects are left out


def test_metric_names() -> None:
    res = {
        "bbox": {
            "AP": 40.0,
            "AP50": 60.0,
            "AP75": 42.0,
            "APs": 20.0,
            "APm": 45.0,
            "APl": float("nan"),
            "AP-disc": 1.0,
        },
        "segm": {"AP": 35.0, "AP50": 55.0, "AP75": 36.0, "APs": 15.0, "APm": 40.0, "APl": 50.0},
    }
    m = coco_metrics(res)
    assert m == {
        "ap_box": 40.0,
        "box_ap50": 60.0,
        "box_ap75": 42.0,
        "box_aps": 20.0,
        "box_apm": 45.0,
        "ap_mask": 35.0,
        "mask_ap50": 55.0,
        "mask_ap75": 36.0,
        "mask_aps": 15.0,
        "mask_apm": 40.0,
        "mask_apl": 50.0,
    }


def test_broken_image_reference_is_one_line(tmp_path: Path) -> None:
    import json
    import shutil

    from detectron2.data import DatasetCatalog

    root = tmp_path / "coco"
    shutil.copytree(make_coco(tmp_path / "world"), root)
    ann = root / "annotations" / "instances_val2017.json"
    data = json.loads(ann.read_text())
    data["images"][1]["file_name"] = "000000999999.jpg"
    ann.write_text(json.dumps(data))
    names = datasets.register(datasets.CocoSource(root, "coco"))
    with pytest.raises(datasets.DataError) as e:
        DatasetCatalog.get(names["val"])
    msg = str(e.value)
    assert "\n" not in msg and "instances_val2017.json" in msg and "000000999999.jpg" in msg
