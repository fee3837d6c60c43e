"""The ADE20K task: UperNet on mmsegmentation from a pre-trained encoder (``transfer/ade20k_upernet.py``).

Registered as ``ade20k``. Before anything is launched it finds the data (``--data``, else the demo
world's copy) and reads every image/annotation pair, loads the mmengine config with its overrides
and, when the checkpoint is known, checks that its ViT is the config's backbone. The job
(:func:`maskalign.segmentation.train.run_job`) imports mmseg; a requeued job resumes from
mmengine's ``last_checkpoint`` in the run folder.
"""

from __future__ import annotations

import argparse
from typing import Any

from maskalign.config import config_dir
from maskalign.distributed import process_env
from maskalign.metric_names import Metric
from maskalign.segmentation.train import DEFAULT_CONFIG
from maskalign.tasks.context import RunContext
from maskalign.tasks.registry import Task, register_task
from maskalign.tasks.spec import JobSpec


@register_task
class Ade20kTask(Task):
    name = "ade20k"
    description = "ADE20K semantic segmentation (UperNet, mmsegmentation)"
    config_dir = config_dir("ade20k")
    default_config = DEFAULT_CONFIG
    metrics = (Metric.MIOU, Metric.AACC, Metric.MACC)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("ADE20K")
        g.add_argument("--data", default=None,
                       help="ADEChallengeData2016 folder (or its parent); default: the demo world's copy")
        g.add_argument("--eval-only", action="store_true", help="evaluate a finished model, no training")
        g.add_argument("--weights", default=None,
                       help="with --eval-only: model checkpoint (default: newest in the run folder)")
        g.add_argument("--no-data-check", action="store_true",
                       help="skip reading every image/annotation pair before the job starts")

    def options(self, args: argparse.Namespace) -> dict[str, Any]:
        return {"data": args.data, "eval_only": args.eval_only, "weights": args.weights,
                "data_check": not args.no_data_check}

    def prepare(self, spec: JobSpec) -> JobSpec:
        from maskalign.segmentation.datasets import TRAIN, VAL, check_layout, resolve_root
        from maskalign.segmentation.train import check_arch, load_seg_config, resolve_config

        opts = dict(spec.options)
        if opts.get("data"):
            root = resolve_root(opts["data"])
        else:
            from maskalign.data.demo_world import ensure_ade20k

            root = ensure_ade20k()
        if opts.get("data_check", True) and process_env().rank == 0:
            check_layout(root, (VAL,) if opts.get("eval_only") else (TRAIN, VAL))
        config = resolve_config(spec.config or DEFAULT_CONFIG)
        cfg = load_seg_config(config, spec.overrides)
        if spec.ckpt is not None:
            from maskalign.encoders import peek_arch
            from maskalign.segmentation.fit_demo import DEMO_CONFIGS, fit_demo_config
            from maskalign.transfer.source import load_pretrained

            # sizes from the file's shapes (memory-mapped): a wrong encoder is refused before it is read
            arch = peek_arch(spec.ckpt) or load_pretrained(spec.ckpt).arch
            if config.stem in DEMO_CONFIGS:  # the demo config takes any encoder's arch (or says why not)
                fit_demo_config(cfg, arch, config.name)
            check_arch(cfg.model.backbone, arch, config.name)
        opts["data_root"] = str(root)
        return spec.with_(options=opts, config_path=str(config))

    def run(self, ctx: RunContext) -> dict[str, Any]:
        from maskalign.segmentation.train import run_job

        if "data_root" not in ctx.spec.options:  # a spec built by hand (or a pipeline stage): find the data now
            ctx.spec = self.prepare(ctx.spec)
        return run_job(ctx)

    def summary(self, result: dict[str, Any]) -> str:
        m = result["metrics"]
        return (f"Done. mIoU {m[Metric.MIOU]:.2f}  aAcc {m[Metric.AACC]:.2f}  mAcc {m[Metric.MACC]:.2f}\n"
                f"Record: {result.get('record')}\nModel: {result.get('weights')}")
