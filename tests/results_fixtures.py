"""Fabricated records for the results tests (written through ``maskalign.records.write_record``)."""

from __future__ import annotations

from pathlib import Path

from maskalign.records import Record, write_record


def put(
    root: Path,
    task: str,
    run: str,
    *,
    row: str | None = None,
    table: str = "1",
    method: str = "maskalign",
    backbone: str = "ViT-B/16",
    supervision: str = "CLIP-B/16",
    forward_ratio: float | None = 0.3,
    reconstruct_ratio: float | None = 0.0,
    pt_epochs: int | None = 200,
    metrics: dict | None = None,
    config: dict | None = None,
    end_time: str = "2026-11-01T12:00:00+00:00",
) -> Path:
    rec = Record(
        run_id=run,
        task=task,
        method=method,
        backbone=backbone,
        supervision=supervision,
        forward_ratio=forward_ratio,
        reconstruct_ratio=reconstruct_ratio,
        pt_epochs=pt_epochs,
        paper_ref={"table": table, "row": row} if row else None,
        metrics=metrics or {},
        config=config or {},
        code_version="test",
        host="test",
        end_time=end_time,
    )
    return write_record(root / task / run, rec)


def fabricate(root: Path) -> None:
    """One small world of records exercising every join rule (the expected tables are in the tests)."""
    # Table 1 maskalign: an older run tagged 1/maskalign and a newer re-run tagged with its same_as row.
    put(
        root,
        "finetune",
        "ft-ma-old",
        row="maskalign",
        metrics={"top1": 84.0},
        end_time="2026-01-01T00:00:00+00:00",
    )
    put(
        root,
        "finetune",
        "ft-ma-new",
        row="linear-ln-cls",
        table="6",
        metrics={"top1": 85.26},
        end_time="2026-02-01T00:00:00+00:00",
    )
    put(root, "linprobe", "lp-ma", row="maskalign", metrics={"top1": 70.04})
    put(
        root,
        "finetune",
        "ft-mae",
        row="mae",
        method="mae",
        supervision="pixel",
        forward_ratio=0.25,
        reconstruct_ratio=0.75,
        pt_epochs=1600,
        metrics={"top1": 83.0},
    )
    put(
        root,
        "finetune",
        "ft-crossmae",
        backbone="vit_base_patch16",  # timm-style names print the paper's way too
        method="crossmae",
        supervision="pixel",
        forward_ratio=0.25,
        reconstruct_ratio=0.125,
        pt_epochs=400,
        metrics={"top1": 82.12},
    )
    # Ablations.
    put(root, "finetune", "ft-top5", row="dynamic-top5", table="3", metrics={"top1": 85.04})
    put(root, "finetune", "ft-top1", row="dynamic-top1", table="3", metrics={"top1": 84.94})
    put(
        root,
        "finetune",
        "ft-mask40",
        row="attentive-40",
        table="4",
        forward_ratio=0.6,
        metrics={"top1": 85.56},
    )
    # Transfers.
    put(
        root,
        "coco",
        "coco-ma",
        row="maskalign",
        metrics={"ap_box": 50.06, "ap_mask": 44.44, "box_ap50": 70.0},
    )
    put(
        root,
        "speed",
        "speed-ma",
        row="maskalign",
        config={"epochs": 200},
        metrics={"sec_per_iter": 0.5, "images_per_s": 2048.0},
    )
    put(
        root,
        "speed",
        "speed-fd",
        row="fd-clip",
        method="fd",
        forward_ratio=1.0,
        config={"epochs": 300},
        metrics={"sec_per_iter": 0.9, "images_per_s": 1138.0},
    )
    put(
        root,
        "speed",
        "speed-mae",
        row="mae",
        table="7",
        method="mae",
        supervision="RGB",
        forward_ratio=0.25,
        reconstruct_ratio=0.75,
        pt_epochs=None,
        config={"epochs": 1600},
        metrics={"sec_per_iter": 0.3},
    )
    put(
        root,
        "robustness",
        "rob-ma",
        row="maskalign",
        metrics={
            "in1k_top1": 85.26,
            "in_a_top1": 40.01,
            "in_r_top1": 55.56,
            "in_sketch_top1": 40.0,
            "in_v2_top1": 75.04,
            "in_c_mce": 45.06,
            "in_c_ce/fog": 30.0,
            "in_c_ce/gaussian_noise": 50.12,
        },
    )
    put(root, "ade20k", "ade-top5", row="dynamic-top5", table="3", metrics={"miou": 48.04, "aacc": 82.5})
