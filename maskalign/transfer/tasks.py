"""The classification transfer tasks: fine-tuning, linear probing, robustness of the fine-tuned model.

Each is a registered :class:`~maskalign.tasks.registry.Task`: its recipe is
``maskalign/configs/<task>/default.yaml`` <- ``--config NAME`` <- ``key=value`` overrides
(``--data DIR`` is ``data.root=DIR``), resolved (and checked key by key) before anything is
launched; the job runs the task's engine ``maskalign.transfer.<task>.run(ctx)`` on the resolved
config. ``robustness`` consumes the fine-tuned classifier that ``finetune``'s record names.
"""

from __future__ import annotations

import argparse
from typing import Any

from maskalign.config import config_dir, load_config, resolve_config_path, to_plain
from maskalign.metric_names import Metric
from maskalign.tasks.context import RunContext
from maskalign.tasks.identity import source_name
from maskalign.tasks.registry import Task, register_task
from maskalign.tasks.spec import JobSpec

CLASSIFIER_METRICS = (Metric.TOP1, Metric.TOP5, Metric.BEST_TOP1, Metric.BEST_EPOCH)


class YamlConfigTask(Task):
    """A task whose recipe is a YAML config (``config_dir/default.yaml`` <- ``--config`` <- overrides),
    resolved before launch; ``--data DIR`` sets ``data.root``."""

    def prepare(self, spec: JobSpec) -> JobSpec:
        cfg_dir = self.config_dir
        path = resolve_config_path(spec.config, cfg_dir) if spec.config else cfg_dir / "default.yaml"
        data = [f"data.root={spec.options['data']}"] if spec.options.get("data") else []
        cfg = load_config(spec.config, [*data, *spec.overrides, f"name={spec.run}", f"output_dir={spec.output_root}"],
                          cfg_dir)
        return spec.with_(resolved=to_plain(cfg), config_path=str(path))

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--data", default=None, help="data set root, the same as data.root=DIR "
                                                         "(default: the config's, else the demo world)")

    def options(self, args: argparse.Namespace) -> dict[str, Any]:
        return {"data": args.data} if args.data else {}

    def open_folder(self, ctx: RunContext) -> None:
        if ctx.config is None:  # a spec built by hand: resolve it here
            from omegaconf import OmegaConf

            ctx.spec = self.prepare(ctx.spec)
            ctx.config = OmegaConf.create(ctx.spec.resolved)
        ctx.open()


@register_task
class FinetuneTask(YamlConfigTask):
    name = "finetune"
    description = "Fine-tune a pre-trained ViT on ImageNet-1k (default: the demo world): the MAE/BEiT recipe"
    config_dir = config_dir("finetune")
    metrics = CLASSIFIER_METRICS

    def run(self, ctx: RunContext) -> dict[str, Any]:
        from maskalign.transfer.finetune import run

        return run(ctx)

    def summary(self, result: dict[str, Any]) -> str:
        return super().summary(result) + f"\nNext: python transfer/robustness.py --ckpt {result.get('checkpoint')}"


@register_task
class LinprobeTask(YamlConfigTask):
    name = "linprobe"
    description = "Linear probing of a frozen pre-trained ViT on ImageNet-1k (BN + linear head, LARS)"
    config_dir = config_dir("linprobe")
    metrics = CLASSIFIER_METRICS

    def run(self, ctx: RunContext) -> dict[str, Any]:
        from maskalign.transfer.linprobe import run

        return run(ctx)

    def tables(self) -> tuple[Any, ...]:
        """DINOv2's grid (``protocol: dinov2``) in a table of its own; MAE's probe stays Table 1's LP column."""
        from maskalign.results.tables import Spec

        cols = (("Top-1", Metric.TOP1), ("Top-5", Metric.TOP5), ("Held-out top-1", "holdout_top1"),
                ("Top-1 chosen on val (DINOv2)", "val_selected_top1"))
        return (Spec.of_task("linear_grid", "DINOv2 linear evaluation: the head chosen on held-out train, on val (%)",
                             self.name, cols, settings=("Method", "Backbone", "Supervision", "Epochs", "Head"),
                             ref="1", protocol="dinov2"),)


@register_task
class RobustnessTask(YamlConfigTask):
    name = "robustness"
    description = "Evaluate a fine-tuned classifier on ImageNet-A, -R, -Sketch, -V2 and -C"
    consumes = "finetune"
    config_dir = config_dir("robustness")
    metrics = (Metric.IN1K_TOP1, Metric.IN_A_TOP1, Metric.IN_R_TOP1, Metric.IN_SKETCH_TOP1, Metric.IN_V2_TOP1,
               Metric.IN_C_MCE)
    ckpt_help = "a fine-tuned classifier (transfer/finetune.py's checkpoint.pth or checkpoint-best.pth)"

    def check_source(self, ckpt: str) -> str:
        from maskalign.transfer.classifier import load_classifier

        _, info = load_classifier(ckpt)
        return str(info.get("run") or source_name(ckpt, {}))

    def run(self, ctx: RunContext) -> dict[str, Any]:
        from maskalign.transfer.robustness import run

        return run(ctx)


__all__ = ["FinetuneTask", "LinprobeTask", "RobustnessTask", "YamlConfigTask"]
