"""One COCO transfer job: pre-trained encoder -> ViTDet Mask R-CNN trained and evaluated on detectron2.

What :func:`run_job` does with a :class:`~maskalign.tasks.spec.JobSpec`, in order (cheap checks
first, so bad input fails in a second, with one line, before detectron2 builds anything):

1. read the pre-trained encoder (``--ckpt``) and find the data folder;
2. load the LazyConfig, apply overrides, register the data, fit the ViT to the encoder, set
   ``num_classes`` from the annotation file;
3. write the encoder in detectron2's keys to ``<out>/pretrained_d2.pth`` (``<out>`` =
   ``spec.folder``; :mod:`.convert`) and point ``train.init_checkpoint`` at it;
4. train with detectron2's ``SimpleTrainer`` (``AMPTrainer`` when ``train.amp.enabled`` on a GPU),
   DDP across processes, a weights-only ``DetectionCheckpointer`` in ``<out>`` (model, optimizer, scheduler,
   iteration) written every ``train.checkpointer.period`` iterations and at the end;
5. evaluate box and mask AP on the test split, write ``<out>/record.json`` for the tables.

Running the same command again resumes from ``<out>/last_checkpoint`` (detectron2's pointer to
the newest checkpoint): after a crash, a preemption (the launcher requeues the task) or a
finished run (which is then only evaluated again).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from maskalign.distributed import resolve_device
from maskalign.errors import UserError
from maskalign.metric_names import Metric
from maskalign.tasks.context import RunContext
from maskalign.tasks.spec import JobSpec
from maskalign.transfer.source import PretrainedEncoder

log = logging.getLogger("maskalign.detection")


def _setup_distributed(device_pref: str) -> Any:
    from detectron2.utils import comm

    from maskalign.distributed import init_distributed

    info = init_distributed("cuda" if str(device_pref).startswith("cuda") else device_pref)
    if info.world_size > 1:
        per_node = os.environ.get("LOCAL_WORLD_SIZE") or os.environ.get("SLURM_NTASKS_PER_NODE", "")
        per_node = (
            int(per_node.split("(")[0])
            if per_node.split("(")[0].isdigit()
            else max(1, torch.cuda.device_count())
        )
        comm.create_local_process_group(per_node)
    return info


def backbone_fit(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, list[str]]:
    """How a converted encoder fits ``model``: keys it lacks, keys it does not know, shape clashes."""
    own = model.state_dict()
    return {
        "missing": sorted(k for k in own if k not in state),
        "unexpected": sorted(k for k in state if k not in own),
        "shape": sorted(k for k in state if k in own and own[k].shape != state[k].shape),
    }


def new_parts(keys: list[str]) -> list[str]:
    """Missing keys grouped for a log line (``backbone.net.*.rel_pos_h``, ``backbone.simfp_2``, ...)."""
    groups = set()
    for k in keys:
        parts = k.split(".")
        if parts[:2] == ["backbone", "net"]:
            groups.add("backbone.net.*." + parts[-1])
        elif parts[0] == "backbone":
            groups.add("backbone." + parts[1])
        else:
            groups.add(parts[0])
    return sorted(groups)


def periodic_eval_hook(period: int, fn):
    """A hook evaluating every ``period`` iterations but not after the last (the job does that)."""
    from detectron2.engine import HookBase

    class PeriodicEval(HookBase):
        def after_step(self) -> None:
            nxt = self.trainer.iter + 1
            if period > 0 and nxt % period == 0 and nxt != self.trainer.max_iter:
                fn()

    return PeriodicEval()


def use_encoder_pixel_stats(cfg: Any, source: PretrainedEncoder, overrides: tuple[str, ...]) -> None:
    """The detector normalises pixels with the encoder's own mean and std (timm's or open_clip's
    statistics, this project's ImageNet ones), unless the command line sets them."""
    from maskalign.transfer.data import encoder_preprocess

    if any(o.startswith(("model.pixel_mean=", "model.pixel_std=")) for o in overrides):
        return
    cfg.model.pixel_mean, cfg.model.pixel_std = encoder_preprocess(source.meta).pixel_stats()


def prepare(spec: JobSpec, source: PretrainedEncoder) -> tuple[Any, Any, Any, Path]:
    """Steps 1-3 of the module docstring: (cfg, source encoder, data registration, output folder).

    ``spec.options``: ``data`` (a folder, ``demo`` or ``None``), ``eval_only``, ``weights``, ``resume``.
    """
    from maskalign.detection import configs, datasets
    from maskalign.detection._compat import import_detectron2
    from maskalign.detection.timm_backbone import fit_backbone
    src = datasets.resolve_source(spec.options.get("data"))
    import_detectron2()
    cfg = configs.load_config(spec.config, list(spec.overrides))
    data = datasets.register(src)
    split = "val" if spec.options.get("eval_only") or "train" not in data else "train"
    fit_backbone(cfg, source, str(spec.ckpt))  # detectron2's ViT for plain ViTs, else the timm wrapper
    use_encoder_pixel_stats(cfg, source, spec.overrides)
    configs.set_num_classes(cfg, len(datasets.categories(src, split)))
    out = spec.folder
    cfg.train.output_dir = str(out)
    return cfg, source, data, out


def run_job(ctx: RunContext) -> dict[str, Any]:
    """Train (unless ``eval_only``) and evaluate; returns metrics and paths (the job writes the record)."""
    from maskalign.detection._compat import import_detectron2

    import_detectron2()  # first: it quiets detectron2's import-time warnings and supplies pkg_resources
    from detectron2.config import LazyConfig, instantiate
    from detectron2.engine import AMPTrainer, SimpleTrainer, create_ddp_model, hooks
    from detectron2.utils import comm
    from detectron2.utils.env import seed_all_rng
    from detectron2.utils.events import CommonMetricPrinter, JSONWriter
    from detectron2.utils.logger import setup_logger

    from maskalign.detection import configs
    from maskalign.detection.checkpointer import SafeDetectionCheckpointer as DetectionCheckpointer
    from maskalign.detection.convert import write_detectron2_checkpoint
    from maskalign.detection.evaluate import evaluate
    from maskalign.detection.timm_backbone import detectron2_state
    from maskalign.monitor import detectron2_writer  # TensorBoard in the run folder

    spec = ctx.spec
    cfg, source, data, out = prepare(spec, ctx.source)
    eval_only, weights_opt = bool(spec.options.get("eval_only")), spec.options.get("weights")
    resume = bool(spec.options.get("resume", True))
    device = resolve_device(cfg.train.get("device", "auto"), key="train.device")
    info = _setup_distributed(device.type)
    if device.type == "cuda":
        device = info.device
    out.mkdir(parents=True, exist_ok=True)
    rank = comm.get_rank()
    for name in ("detectron2", "fvcore", "maskalign"):
        setup_logger(
            output=str(out), distributed_rank=rank, name=name, abbrev_name={"detectron2": "d2"}.get(name)
        )
    seed_all_rng(int(cfg.train.get("seed", 0) or 0) + rank)
    log.info(
        "COCO job: ckpt %s, config %s, data %s (%s), output %s, device %s x %d",
        spec.ckpt,
        spec.config or configs.DEFAULT_CONFIG,
        data["root"],
        data["kind"],
        out,
        device,
        comm.get_world_size(),
    )

    pretrained = out / "pretrained_d2.pth"
    if comm.is_main_process():
        write_detectron2_checkpoint(detectron2_state(source, cfg), pretrained, converted=True)
        try:
            LazyConfig.save(cfg, str(out / "config.yaml"))
        except Exception as e:  # saving is a convenience; never fail a job on it
            log.warning("could not save the resolved config: %s", e)
    comm.synchronize()
    cfg.train.init_checkpoint = str(pretrained)

    model = instantiate(cfg.model).to(device)
    fit = backbone_fit(model, detectron2_state(source, cfg))
    if fit["unexpected"] or fit["shape"]:
        raise UserError(
            f"{spec.ckpt}: encoder does not fit the config's ViT (unexpected {fit['unexpected'][:3]}, "
            f"shape mismatch {fit['shape'][:3]})"
        )
    log.info(
        "pre-trained encoder fits; new (randomly initialised) parts: %s", ", ".join(new_parts(fit["missing"]))
    )

    record_cfg = {
        "config_file": str(configs.resolve_config_file(spec.config)),
        "overrides": list(spec.overrides),
        "data": data["root"],
        "data_kind": data["kind"],
        "eval_only": eval_only,
        **configs.summary(cfg),
    }
    ctx.record_config.update(record_cfg, pixel_mean=list(cfg.model.pixel_mean), pixel_std=list(cfg.model.pixel_std))

    if eval_only:
        checkpointer = DetectionCheckpointer(model, str(out))
        weights = weights_opt or (
            checkpointer.get_checkpoint_file() if checkpointer.has_checkpoint() else None
        )
        if not weights:
            raise UserError(f"--eval-only: no trained detector in {out} (train first, or pass --weights)")
        if not Path(weights).is_file():
            raise UserError(f"--weights {weights}: file not found")
        checkpointer.load(weights)
        metrics = evaluate(cfg, model, out)
        final = Path(weights)
    else:
        cfg.optimizer.params.model = model
        optimizer = instantiate(cfg.optimizer)
        train_loader = instantiate(cfg.dataloader.train)
        ddp_model = create_ddp_model(model, **cfg.train.ddp) if comm.get_world_size() > 1 else model
        use_amp = bool(cfg.train.amp.enabled) and device.type == "cuda"
        if cfg.train.amp.enabled and not use_amp:
            log.info("train.amp.enabled ignored on %s", device.type)
        trainer = (AMPTrainer if use_amp else SimpleTrainer)(ddp_model, train_loader, optimizer)
        checkpointer = DetectionCheckpointer(model, str(out), trainer=trainer)
        max_iter = int(cfg.train.max_iter)
        trainer.register_hooks(
            [
                hooks.IterationTimer(),
                hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
                hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer)
                if comm.is_main_process()
                else None,
                periodic_eval_hook(int(cfg.train.eval_period), lambda: evaluate(cfg, model, out)),
                hooks.PeriodicWriter(
                    [CommonMetricPrinter(max_iter), JSONWriter(str(out / "metrics.json")),
                     detectron2_writer(out)],
                    period=int(cfg.train.log_period),
                )
                if comm.is_main_process()
                else None,
            ]
        )
        resumed = resume and checkpointer.has_checkpoint()
        checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=resume)
        start_iter = trainer.iter + 1 if resumed else 0
        if resumed:
            log.info(
                "resumed from %s at iteration %d of %d",
                checkpointer.get_checkpoint_file(),
                start_iter,
                max_iter,
            )
        if start_iter < max_iter:
            trainer.train(start_iter, max_iter)
        else:
            log.info("training already finished; evaluating")
        metrics = evaluate(cfg, model, out)
        final = out / "model_final.pth"
    log.info("box AP %.2f, mask AP %.2f", metrics.get(Metric.AP_BOX, float("nan")),
             metrics.get(Metric.AP_MASK, float("nan")))
    comm.synchronize()
    return {"out_dir": str(out), "metrics": metrics, "checkpoint": str(final) if final.is_file() else None}
