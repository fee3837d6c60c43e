"""End-to-end fine-tuning on ImageNet (or the demo world): the MAE / BEiT recipe MaskAlign uses.

MaskAlign, section 4.1, fine-tunes ViT-B/16 for 100 epochs (5 warm-up) with AdamW, base lr 3e-4
(``lr = blr * batch / 256``), layer-wise lr decay 0.6 (its README: 0.55), drop path 0.2, label
smoothing 0.1, mixup 0.8 / cutmix 1.0, RandAugment ``rand-m9-mstd0.5-inc1``, random erasing 0.25
and a global-average-pooled head behind a fresh ``fc_norm``: MAE's ``main_finetune.py``. The
pieces are timm's (``Mixup``, ``create_transform``, ``SoftTargetCrossEntropy``); the layer-decay
groups are :mod:`maskalign.transfer.layer_decay` (MAE semantics, tested against the formula).
"""

from __future__ import annotations

from typing import Any

import torch

from maskalign.config import ConfigError
from maskalign.engine.optim import scaled_lr
from maskalign.engine.rng import seed_everything
from maskalign.tasks.context import SCRATCH_META, RunContext
from maskalign.transfer.classifier import build_classifier, classifier_from, classifier_spec
from maskalign.transfer.data import (
    classification_sets,
    crop_pct_for,
    encoder_preprocess,
    eval_loader,
    finetune_train_transform,
    per_process_batch,
    train_loader,
)
from maskalign.transfer.layer_decay import param_groups_lrd
from maskalign.transfer.source import origin_of
from maskalign.transfer.trainer import Schedule, fit


def _mixup_and_criterion(aug: Any, num_classes: int):
    """timm's Mixup + SoftTargetCrossEntropy, or label-smoothed CE when mixing is off (MAE)."""
    from timm.data import Mixup
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    if aug.mixup > 0 or aug.cutmix > 0:
        mix = Mixup(mixup_alpha=aug.mixup, cutmix_alpha=aug.cutmix, prob=aug.mixup_prob,
                    switch_prob=aug.mixup_switch_prob, mode=aug.mixup_mode, label_smoothing=aug.smoothing,
                    num_classes=num_classes)
        return mix, SoftTargetCrossEntropy()
    if aug.smoothing > 0:
        return None, LabelSmoothingCrossEntropy(smoothing=aug.smoothing)
    return None, torch.nn.CrossEntropyLoss()


def run(ctx: RunContext) -> dict[str, Any]:
    """Fine-tune the context's encoder under its config (resuming if its folder holds a checkpoint)."""
    cfg, info = ctx.config, ctx.dist
    seed_everything(int(cfg.seed) + info.rank)
    pretrained = bool(cfg.model.pretrained)
    src = ctx.source
    if not pretrained:  # a from-scratch baseline: only the architecture is taken
        ctx.record_meta = dict(SCRATCH_META)
    img_size = int(cfg.model.img_size or src.arch["img_size"])
    prep = encoder_preprocess(src.meta)
    train_t = finetune_train_transform(img_size, cfg.aug, prep)
    train_set, val_set, root, kind = classification_sets(cfg, img_size, train_t, prep)
    num_classes = len(train_set.classes)
    head = {"kind": "finetune", "img_size": img_size, "global_pool": cfg.model.global_pool,
            "drop_path": float(cfg.model.drop_path), "head_init_std": float(cfg.model.head_init_std)}
    if pretrained:
        model, report = classifier_from(src, num_classes, **head)
        loaded = report.summary()
    else:
        model = build_classifier(src.arch, num_classes, **head)
        loaded = "random initialisation (model.pretrained=false): only the architecture is taken"
    model.to(info.device)
    per = per_process_batch(cfg.optim.total_batch_size, info.world_size, cfg.optim.accum_iter)
    tl, sampler = train_loader(train_set, per, info, int(cfg.seed), int(cfg.data.num_workers))
    vl = eval_loader(val_set, max(per, 64), info, int(cfg.data.num_workers))
    lr = scaled_lr(float(cfg.optim.blr), int(cfg.optim.total_batch_size))
    groups = param_groups_lrd(model, float(cfg.optim.weight_decay), float(cfg.optim.layer_decay))
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=tuple(cfg.optim.betas))
    mixup, criterion = _mixup_and_criterion(cfg.aug, num_classes)
    if mixup is not None and per % 2:
        raise ConfigError(f"mixup/cutmix pair each batch with its reverse: the per-process batch ({per}) must be even")
    if info.is_main:
        print(f"[finetune] {cfg.name}: {src.path} -> {num_classes} classes of {root} ({kind}); {loaded}", flush=True)
        print(f"[finetune] {len(train_set)} train / {len(val_set)} val images at {img_size}px, batch "
              f"{cfg.optim.total_batch_size}, lr {lr:.3g} (blr {cfg.optim.blr}), layer decay {cfg.optim.layer_decay}, "
              f"{cfg.optim.epochs} epochs, device {info.device}, world {info.world_size}", flush=True)
    saved = {"classifier": classifier_spec(src.arch, num_classes, "finetune", img_size, cfg.model.global_pool),
             "classes": list(train_set.classes), "crop_pct": crop_pct_for(cfg, prep),
             "meta": {**src.meta, **ctx.record_meta, "origin": origin_of(src.meta)},
             "run": str(cfg.name), "task": "finetune"}
    schedule = Schedule(epochs=int(cfg.optim.epochs), warmup_epochs=float(cfg.optim.warmup_epochs), lr=lr,
                        min_lr=float(cfg.optim.min_lr), accum_iter=int(cfg.optim.accum_iter),
                        clip_grad=cfg.optim.clip_grad, max_steps=cfg.runtime.max_steps, amp=cfg.runtime.amp)
    return fit(model, optimizer, criterion, tl, sampler, vl, info, ctx.folder, schedule, saved, tag="finetune",
               batch_fn=mixup)
