"""Linear probing: a frozen pre-trained encoder, a BatchNorm + linear head trained with LARS.

MAE's ``main_linprobe.py``: the [CLS] token after the final norm, ``BatchNorm1d(affine=False,
eps=1e-6)`` then a linear layer (``trunc_normal_(std=0.01)``); only the head trains, with LARS
(momentum 0.9, trust 0.001), weight decay 0, ``lr = blr * batch / 256`` with blr 0.1, 90 epochs
of which 10 warm-up, batch 16384; RandomResizedCrop + flip for training. MaskAlign's README probes
with blr 0.025 (``maskalign_vitb16.yaml``). ``optim.name=sgd`` swaps LARS for momentum SGD.

``protocol: dinov2`` (``--config dinov2_grid``) runs DINOv2's linear evaluation instead: a grid
of heads fed by one frozen forward per batch (:mod:`maskalign.transfer.linear_grid`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from maskalign.config import ConfigError
from maskalign.engine.optim import scaled_lr
from maskalign.engine.rng import seed_everything
from maskalign.tasks.context import RunContext
from maskalign.transfer.classifier import classifier_from, classifier_spec
from maskalign.transfer.data import (
    classification_sets,
    crop_pct_for,
    encoder_preprocess,
    eval_loader,
    linprobe_train_transform,
    per_process_batch,
    train_loader,
)
from maskalign.transfer.lars import LARS
from maskalign.transfer.trainer import Schedule, fit


def probe_mode(model: nn.Module) -> None:
    """Frozen encoder in eval mode; only the head (its BatchNorm statistics) in training mode."""
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    inner.eval()
    inner.head.train()


def build_optimizer(head: nn.Module, optim: Any, lr: float) -> torch.optim.Optimizer:
    if optim.name == "lars":
        return LARS(head.parameters(), lr=lr, weight_decay=float(optim.weight_decay), momentum=float(optim.momentum),
                    trust_coefficient=float(optim.trust_coefficient))
    if optim.name == "sgd":
        return torch.optim.SGD(head.parameters(), lr=lr, momentum=float(optim.momentum),
                               weight_decay=float(optim.weight_decay))
    raise ConfigError(f"optim.name: unknown {optim.name!r}; use lars or sgd")


def run(ctx: RunContext) -> dict[str, Any]:
    """Train a linear probe on the context's encoder under its config (resuming if possible):
    MAE's BN + LARS probe (``protocol: mae``) or DINOv2's grid of heads (``protocol: dinov2``)."""
    cfg = ctx.config
    protocol = str(cfg.get("protocol") or "mae")
    if protocol == "dinov2":
        from maskalign.transfer import linear_grid

        return linear_grid.run(ctx)
    if protocol != "mae":
        raise ConfigError(f"protocol: unknown {protocol!r}; use mae (MAE's BN + LARS probe) or dinov2 "
                          f"(DINOv2's grid of heads)")
    info = ctx.dist
    seed_everything(int(cfg.seed) + info.rank)
    src = ctx.source
    img_size = int(cfg.model.img_size or src.arch["img_size"])
    prep = encoder_preprocess(src.meta)
    train_set, val_set, root, kind = classification_sets(cfg, img_size, linprobe_train_transform(img_size, prep), prep)
    num_classes = len(train_set.classes)
    model, report = classifier_from(src, num_classes, kind="linprobe", img_size=img_size,
                                    global_pool=cfg.model.global_pool, head_init_std=float(cfg.model.head_init_std))
    model.to(info.device)
    per = per_process_batch(cfg.optim.total_batch_size, info.world_size, cfg.optim.accum_iter)
    tl, sampler = train_loader(train_set, per, info, int(cfg.seed), int(cfg.data.num_workers))
    vl = eval_loader(val_set, max(per, 64), info, int(cfg.data.num_workers))
    lr = scaled_lr(float(cfg.optim.blr), int(cfg.optim.total_batch_size))
    optimizer = build_optimizer(model.head, cfg.optim, lr)
    if info.is_main:
        print(f"[linprobe] {cfg.name}: {src.path} -> {num_classes} classes of {root} ({kind}); {report.summary()}",
              flush=True)
        print(f"[linprobe] {len(train_set)} train / {len(val_set)} val images at {img_size}px, "
              f"{cfg.model.global_pool} features, {cfg.optim.name} lr {lr:.3g} (blr {cfg.optim.blr}), batch "
              f"{cfg.optim.total_batch_size}, {cfg.optim.epochs} epochs, device {info.device}", flush=True)
    saved = {"classifier": classifier_spec(src.arch, num_classes, "linprobe", img_size, cfg.model.global_pool),
             "classes": list(train_set.classes), "crop_pct": crop_pct_for(cfg, prep), "meta": src.meta,
             "run": str(cfg.name), "task": "linprobe"}
    schedule = Schedule(epochs=int(cfg.optim.epochs), warmup_epochs=float(cfg.optim.warmup_epochs), lr=lr,
                        min_lr=float(cfg.optim.min_lr), accum_iter=int(cfg.optim.accum_iter),
                        max_steps=cfg.runtime.max_steps, amp=cfg.runtime.amp)
    return fit(model, optimizer, nn.CrossEntropyLoss(), tl, sampler, vl, info, ctx.folder, schedule, saved,
               tag="linprobe", set_mode=probe_mode)
