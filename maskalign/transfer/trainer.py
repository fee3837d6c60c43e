"""The epoch loop shared by fine-tuning and linear probing: schedule, evaluation, best/last, resume.

As MAE's ``engine_finetune.py``: the lr follows linear warm-up then half-cycle cosine *per
iteration*, each optimizer group scaled by its ``lr_scale`` (layer decay); the model is evaluated on
the val set after every epoch. Two files per run, written atomically:

* ``checkpoint.pth`` -- the last epoch: model, optimizer, RNG states, epoch, best-so-far, plus the
  classifier description. A re-run or requeued job resumes from it, so a preempted 100-epoch
  fine-tune loses at most one epoch.
* ``checkpoint-best.pth`` -- the weights of the best val top-1 so far (no optimizer state).

Both can be read back with :func:`maskalign.transfer.classifier.load_classifier`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from maskalign.amp import autocast
from maskalign.atomic import append_line, atomic_torch_save, atomic_write_text
from maskalign.checkpoint import CheckpointError, load_file
from maskalign.config import ConfigError
from maskalign.distributed import DistInfo, all_reduce_mean, barrier
from maskalign.engine.optim import cosine_lr, set_lr
from maskalign.engine.rng import rng_state, set_rng_state
from maskalign.metric_names import Metric
from maskalign.transfer.accuracy import evaluate

LAST = "checkpoint.pth"
BEST = "checkpoint-best.pth"


@dataclass
class Schedule:
    """How long and how fast: the optimizer-independent part of a recipe."""

    epochs: int
    warmup_epochs: float
    lr: float
    min_lr: float
    accum_iter: int = 1
    clip_grad: float | None = None
    max_steps: int | None = None
    amp: str = "auto"


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _resume(out: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
    path = out / LAST
    if not path.is_file():
        return None
    ckpt = load_file(path)
    try:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
    except (KeyError, RuntimeError, ValueError) as e:
        first = " ".join(str(e).split()) or type(e).__name__  # whole: a cut message hides the cause
        raise CheckpointError(f"{path}: cannot resume from it with this config ({first}); "
                              f"use another name= or delete the folder") from None
    set_rng_state(ckpt["rng"])
    return ckpt


def fit(model: nn.Module, optimizer: torch.optim.Optimizer,
        criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], train_loader: DataLoader, train_sampler: Any,
        val_loader: DataLoader, info: DistInfo, out: Path,
        schedule: Schedule, saved: dict[str, Any], *, tag: str,
        batch_fn: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
        set_mode: Callable[[nn.Module], None] | None = None) -> dict[str, Any]:
    """Train ``model`` for ``schedule.epochs`` (resuming from ``out``); return the record's metrics
    (last epoch's val top-1/top-5, best top-1 and its epoch) with the last and best val results.

    Args:
        model: the classifier (a plain module; wrapped in DDP here when the world is larger than 1).
        optimizer: its optimizer; groups may carry ``lr_scale``.
        criterion: loss of (logits, targets) -- targets as produced by ``batch_fn``.
        saved: extra entries stored in both checkpoints (classifier spec, classes, metadata).
        tag: prefix of the progress lines.
        batch_fn: applied to every training batch (mixup / cutmix).
        set_mode: puts the model into training mode at every epoch start (default ``model.train()``).
    """
    iters = len(train_loader)
    if iters == 0:
        raise ConfigError(f"[{tag}] the training set is smaller than one batch; lower optim.total_batch_size")
    ckpt = _resume(out, model, optimizer)
    start_epoch, step = (int(ckpt["epoch"]), int(ckpt["step"])) if ckpt else (0, 0)
    best: dict[str, Any] = dict(ckpt["best"]) if ckpt else {"top1": -1.0}
    last: dict[str, Any] = dict(ckpt.get("last") or {}) if ckpt else {}
    if ckpt and info.is_main:
        print(f"[{tag}] resumed from {out / LAST} at epoch {start_epoch}", flush=True)
    net: nn.Module = model
    if info.world_size > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[info.device.index] if info.device.type == "cuda" else None)
    set_mode = set_mode or (lambda m: m.train())
    log_path = out / "log.jsonl"
    if info.is_main and start_epoch == 0 and log_path.exists():
        log_path.unlink()
    from maskalign.monitor import TrainMonitor  # TensorBoard / W&B (logging: in the config)
    mon = TrainMonitor(out, info.is_main, info.device, min(20, iters), start_step=step)
    from maskalign.progress import Progress

    planned = (schedule.epochs - start_epoch) * iters
    if schedule.max_steps is not None:
        planned = min(planned, max(int(schedule.max_steps) - step, 0) * schedule.accum_iter)
    progress = Progress(tag, planned, enabled=info.is_main)
    for epoch in range(start_epoch, schedule.epochs):
        train_sampler.set_epoch(epoch)
        set_mode(net)
        t0, loss_sum, seen = time.time(), torch.zeros((), device=info.device), 0
        for it, (images, target) in enumerate(mon.timed(train_loader)):
            if it % schedule.accum_iter == 0:
                set_lr(optimizer, cosine_lr(epoch + it / iters, schedule.lr, schedule.min_lr,
                                            schedule.warmup_epochs, schedule.epochs))
            images = images.to(info.device, non_blocking=True)
            target = target.to(info.device, non_blocking=True)
            if batch_fn is not None:
                images, target = batch_fn(images, target)
            with autocast(info.device, schedule.amp):
                loss = criterion(net(images), target)
            (loss / schedule.accum_iter).backward()
            if (it + 1) % schedule.accum_iter == 0:
                if schedule.clip_grad:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), schedule.clip_grad)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
            loss_sum += loss.detach().float()
            seen += 1
            mon.iteration(it, step, loss, {}, max(g["lr"] for g in optimizer.param_groups),
                          len(images) * info.world_size)
            progress.update()
            if schedule.max_steps is not None and step >= schedule.max_steps:
                break
        train_loss = all_reduce_mean(loss_sum / max(seen, 1)).item()
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"[{tag}] training loss became {train_loss} in epoch {epoch + 1}; "
                                     f"lower optim.blr or set optim.clip_grad")
        train_s = time.time() - t0
        stats = evaluate(model, val_loader, info.device, schedule.amp)
        done = epoch + 1
        finished = done >= schedule.epochs or (schedule.max_steps is not None and step >= schedule.max_steps)
        last = {"top1": stats["top1"], "top5": stats["top5"], "loss": stats["loss"], "epoch": done}
        improved = stats["top1"] > best["top1"]
        if improved:
            best = dict(last)
        if info.is_main:
            entry = {"epoch": epoch, "train_loss": train_loss, "lr": max(g["lr"] for g in optimizer.param_groups),
                     "val_top1": stats["top1"], "val_top5": stats["top5"], "val_loss": stats["loss"],
                     "step": step, "train_images_per_s": seen * train_loader.batch_size * info.world_size / train_s}
            if improved:
                atomic_torch_save({"model": _unwrap(model).state_dict(), "epoch": done, "metrics": last, **saved},
                                  out / BEST)
            atomic_torch_save({"model": _unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                               "epoch": done, "step": step, "rng": rng_state(), "best": best, "last": last,
                               **saved}, out / LAST)
            append_line(log_path, json.dumps(entry))  # a full disk is one line
            mon.epoch(done, entry, step)
            print(f"[{tag}] epoch {done}/{schedule.epochs} train loss {train_loss:.4f} | val top-1 "
                  f"{stats['top1']:.2f} top-5 {stats['top5']:.2f} (best {best['top1']:.2f}) "
                  f"[{entry['train_images_per_s']:.0f} img/s]", flush=True)
        barrier()
        if finished:
            break
    mon.close()
    if info.is_main:
        atomic_write_text(out / "summary.json", json.dumps({"last": last, "best": best}, indent=2) + "\n")
    metrics = {Metric.TOP1: last["top1"], Metric.TOP5: last["top5"], Metric.BEST_TOP1: best["top1"],
               Metric.BEST_EPOCH: best.get("epoch", 0)}
    return {"metrics": metrics, "last": last, "best": best, "epochs_done": last.get("epoch", start_epoch),
            "checkpoint": str(out / LAST), "best_checkpoint": str(out / BEST)}
