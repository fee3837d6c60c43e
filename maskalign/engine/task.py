"""Pre-training as a task: ``python pretrain/submit.py`` is ``cli.run("pretrain")``, like every script.

Registered as ``pretrain``; it consumes nothing (no ``--ckpt``) and makes the encoder that the
transfer tasks consume. Its recipe is ``maskalign/configs/pretrain/default.yaml`` <- ``--config``
<- ``key=value`` overrides (``--data DIR`` is ``data.dataset=imagenet data.root=DIR``); the run
is ``--name``, else the config's ``name``, else the config file's stem. Its run folder has a
policy of its own, kept by the engine (:mod:`maskalign.runfolder.resume`): a finished run is left
untouched, a resume must match the config, ``runtime.restart=true`` sets the old outputs aside.
Its record describes the encoder it makes (the engine writes it from its own metadata).
"""

from __future__ import annotations

import argparse
from typing import Any

from maskalign.config import config_dir, load_config, resolve_config_path, to_plain
from maskalign.metric_names import Metric
from maskalign.tasks.context import RunContext
from maskalign.tasks.registry import Task, register_task
from maskalign.tasks.spec import JobSpec


@register_task
class PretrainTask(Task):
    name = "pretrain"
    description = "Pre-train a ViT student (MaskAlign, FD, MAE, CrossMAE, LUT); default: the demo on this machine"
    consumes = None
    config_dir = config_dir("pretrain")
    metrics = (Metric.FINAL_LOSS,)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--data", default=None,
                            help="ImageNet folder (train/ inside), the same as data.dataset=imagenet data.root=DIR "
                                 "(default: the demo world)")

    def options(self, args: argparse.Namespace) -> dict[str, Any]:
        return {"data": args.data} if args.data else {}

    def prepare(self, spec: JobSpec) -> JobSpec:
        data = spec.options.get("data")
        given = [*(["data.dataset=imagenet", f"data.root={data}"] if data else []), *spec.overrides,
                 f"output_dir={spec.output_root}", *([f"name={spec.run}"] if spec.run else [])]
        cfg = load_config(spec.config, given, self.config_dir)
        path = resolve_config_path(spec.config, self.config_dir) if spec.config else self.config_dir / "default.yaml"
        return spec.with_(run=str(cfg.name), resolved=to_plain(cfg), config_path=str(path))

    def validate(self, spec: JobSpec) -> None:
        """Before sbatch: data root, teacher checkpoint, a run folder no live job writes."""
        from omegaconf import OmegaConf

        from maskalign.engine.preflight import validate

        validate(OmegaConf.create(spec.resolved))

    def open_folder(self, ctx: RunContext) -> None:
        """Nothing here: the engine opens the folder by pre-training's own policy (see the module docstring)."""

    def run(self, ctx: RunContext) -> dict[str, Any]:
        from maskalign.engine.pretrain import train

        return train(ctx.config)

    def summary(self, result: dict[str, Any]) -> str:
        if "encoder" not in result:
            return f"Record: {result.get('record')}"
        return (f"Done. Encoder checkpoint: {result['encoder']}\n"
                f"Resume state: {result['out_dir']}/checkpoint.pth\n"
                f"Next: python transfer/finetune.py --ckpt {result['encoder']}")
