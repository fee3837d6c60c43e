"""The COCO task: ViTDet Mask R-CNN on detectron2 from a pre-trained encoder (``transfer/coco_vitdet.py``).

Registered as ``coco``. Its configs are LazyConfig files (``detectron_configs/``, shipped in the wheel as
``maskalign/configs/coco/``, or a path); what can be checked without detectron2 (the config file
exists, the data folder is there) is checked before anything is launched. The job
(:func:`maskalign.detection.train.run_job`) imports detectron2; a requeued job resumes from
``<run folder>/last_checkpoint``.
"""

from __future__ import annotations

import argparse
from typing import Any

from maskalign.config import config_dir
from maskalign.metric_names import Metric
from maskalign.tasks.context import RunContext
from maskalign.tasks.registry import Task, register_task
from maskalign.tasks.spec import JobSpec

DEFAULT_CONFIG = "mask_rcnn_vitdet_tiny_demo"  # = detection.configs.DEFAULT_CONFIG (that module imports torch)


@register_task
class CocoTask(Task):
    name = "coco"
    description = "COCO box/mask AP of a pre-trained ViT with ViTDet Mask R-CNN (detectron2)"
    config_dir = config_dir("coco")
    default_config = DEFAULT_CONFIG
    metrics = (Metric.AP_BOX, Metric.AP_MASK)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("COCO")
        g.add_argument("--data", default=None,
                       help="folder holding coco/ (or a COCO folder itself), or 'demo'; default: "
                            "$DETECTRON2_DATASETS if set, else the demo world's COCO copy")
        g.add_argument("--eval-only", dest="eval_only", action="store_true",
                       help="evaluate the trained detector in the run folder (or --weights) without training")
        g.add_argument("--weights", default=None, help="with --eval-only: a detectron2 checkpoint of the detector")
        g.add_argument("--no-resume", dest="resume", action="store_false",
                       help="start from the pre-trained encoder even if the run folder holds a checkpoint")

    def options(self, args: argparse.Namespace) -> dict[str, Any]:
        return {"data": args.data, "eval_only": args.eval_only, "weights": args.weights, "resume": args.resume}

    def prepare(self, spec: JobSpec) -> JobSpec:
        from maskalign.detection import configs, datasets

        data = spec.options.get("data")
        if data not in (None, datasets.DEMO):
            datasets.resolve_source(data)
        path = configs.resolve_config_file(spec.config)
        if spec.ckpt is not None:
            self._check_sizes(spec)
        return spec.with_(config_path=str(path))

    @staticmethod
    def _check_sizes(spec: JobSpec) -> None:
        """The config's ViT against the file's sizes, read from its shapes (memory-mapped): a ViT-L
        under a ViT-B config is refused before the file is read in full."""
        from maskalign.encoders import peek_arch

        arch = peek_arch(spec.ckpt)
        if arch is None:  # a hub name: checked when the job loads it
            return
        from maskalign.detection._compat import import_detectron2

        import_detectron2()
        from maskalign.detection import configs
        from maskalign.detection.timm_backbone import PYRAMID_STRIDE

        cfg = configs.load_config(spec.config, list(spec.overrides))
        stride = PYRAMID_STRIDE.get(int(arch["patch_size"]), int(arch["patch_size"]))
        configs.fit_backbone(cfg, {**arch, "patch_size": stride}, source=str(spec.ckpt))

    def run(self, ctx: RunContext) -> dict[str, Any]:
        from maskalign.detection.train import run_job

        return run_job(ctx)

    def summary(self, result: dict[str, Any]) -> str:
        m, nan = result.get("metrics") or {}, float("nan")
        return (f"Done. box AP {m.get(Metric.AP_BOX, nan):.2f}, mask AP {m.get(Metric.AP_MASK, nan):.2f}\n"
                f"Record: {result.get('record')}")
