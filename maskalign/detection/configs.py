"""Loading a LazyConfig (``detectron_configs/``, shipped as ``maskalign/configs/coco/``), applying overrides,
fitting the backbone.

Three things happen between the file and the trainer, each logged:

1. Overrides, with detectron2's (hydra's) grammar, but a key that exists nowhere in the config is
   refused instead of silently created (a typo would otherwise train the default).
2. When ``train.max_iter`` is overridden and the schedule is not, the schedule follows: milestones
   and ``num_updates`` scale with the new length and ``warmup_length`` (a fraction of the schedule,
   frozen when the file ran) is recomputed to keep the same number of warm-up iterations.
3. The ViT is fitted to the pre-trained encoder: ``pretrain_img_size`` always comes from the
   checkpoint (so its ``pos_embed`` loads as it is); width, depth, heads and patch come from it too
   when the config says ``maskalign = dict(backbone="from_checkpoint")``, and must otherwise equal
   the config's (a ViT-S checkpoint under the ViT-B recipe is refused with one line).
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Any

from maskalign.config import config_dir, find_config_file
from maskalign.detection.convert import vit_kwargs
from maskalign.errors import ConfigError

CONFIG_DIR = config_dir("coco")
DEFAULT_CONFIG = "mask_rcnn_vitdet_tiny_demo.py"

log = logging.getLogger("maskalign.detection")


def resolve_config_file(name: str | Path | None) -> Path:
    """A config given by path, or by name (with or without ``.py``) inside ``detectron_configs/``."""
    name = name or DEFAULT_CONFIG
    found = find_config_file(name, CONFIG_DIR, ".py")
    if found is not None:
        return found.resolve()
    known = ", ".join(sorted(c.stem for c in CONFIG_DIR.glob("*.py")))
    raise ConfigError(f"detectron2 config {str(name)!r} not found (known in {CONFIG_DIR}: {known})")


def load_config(name: str | Path | None, overrides: list[str] = ()) -> Any:
    """The LazyConfig of ``name`` with ``overrides`` applied and the schedule kept consistent."""
    from maskalign.detection._compat import import_detectron2

    import_detectron2()
    from detectron2.config import LazyConfig
    from omegaconf import OmegaConf

    path = resolve_config_file(name)
    try:
        cfg = LazyConfig.load(str(path))
    except Exception as e:  # a user's config file can raise anything while it runs
        raise ConfigError(
            f"{path}: cannot load ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from None
    for key in ("model", "dataloader", "optimizer", "lr_multiplier", "train"):
        if key not in cfg:
            raise ConfigError(f"{path}: not a LazyConfig for training (no top-level '{key}')")
    old_iter = int(cfg.train.max_iter)
    keys = []
    for o in overrides:
        if "=" not in o:
            raise ConfigError(f"override {o!r}: expected key=value")
        key = o.split("=", 1)[0].strip().lstrip("+")
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent, default=None) if parent else cfg
        if node is None or not OmegaConf.is_config(node) or leaf not in node:
            raise ConfigError(f"override {o!r}: no key '{key}' in {path.name}")
        keys.append(key)
    try:
        LazyConfig.apply_overrides(cfg, list(overrides))
    except Exception as e:
        raise ConfigError(
            f"overrides {list(overrides)}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from None
    if "train.max_iter" in keys and not any(k.startswith("lr_multiplier") for k in keys):
        rescale_schedule(cfg, old_iter, int(cfg.train.max_iter))
    return cfg


def rescale_schedule(cfg: Any, old_iter: int, new_iter: int) -> None:
    """Scale a ``WarmupParamScheduler(MultiStepParamScheduler)`` from ``old_iter`` to ``new_iter``."""
    lm = cfg.lr_multiplier
    sched = lm.get("scheduler", None)
    if sched is None or old_iter == new_iter or new_iter <= 0:
        return
    if "milestones" in sched:
        # strictly increasing and inside the new schedule; a step that collapses onto another is dropped
        # (none fits a one-iteration schedule: fvcore wants every milestone below num_updates)
        scaled = sorted({max(1, min(new_iter - 1, round(m * new_iter / old_iter))) for m in sched.milestones}
                        if new_iter > 1 else set())
        if "values" in sched and len(scaled) < len(sched.milestones):
            sched["values"] = list(sched["values"])[: len(scaled) + 1]
        sched.milestones = scaled
    if "num_updates" in sched:
        sched.num_updates = new_iter
    if "warmup_length" in lm:
        warm_iters = float(lm.warmup_length) * old_iter
        if warm_iters >= new_iter and new_iter > 1:  # the warm-up would be the whole run: a fifth of it
            print(f"[coco] note: warm-up clipped to {max(1, new_iter // 5)} of the run's {new_iter} iterations "
                  f"(it was {warm_iters:g})", flush=True)
            lm.warmup_length = max(1, new_iter // 5) / new_iter
        else:
            lm.warmup_length = min(1.0, warm_iters / new_iter)
    log.info(
        "train.max_iter %d -> %d: milestones %s, warmup_length %.4g",
        old_iter,
        new_iter,
        list(sched.get("milestones", [])),
        float(lm.get("warmup_length", 0.0)),
    )


def fit_backbone(cfg: Any, arch: dict[str, Any], source: str = "checkpoint") -> None:
    """Make ``cfg.model.backbone.net`` the pre-trained encoder's ViT (see the module docstring)."""
    from detectron2.config import LazyCall as L
    from detectron2.modeling.backbone.fpn import LastLevelMaxPool

    from maskalign.detection.modeling import SCALE_FACTORS, MaxPoolLevels

    net = cfg.model.backbone.net
    want = vit_kwargs(arch)
    mode = (cfg.get("maskalign") or {}).get("backbone", "check")
    if mode not in ("check", "from_checkpoint"):
        raise ConfigError(f"maskalign.backbone must be 'check' or 'from_checkpoint', not {mode!r}")
    if want["patch_size"] not in SCALE_FACTORS:
        raise ConfigError(
            f"{source}: patch size {want['patch_size']} is not supported by the "
            f"ViTDet pyramid here (supported: {sorted(SCALE_FACTORS)})"
        )
    if mode == "check":
        for k in ("patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio"):
            if float(net.get(k, 4.0 if k == "mlp_ratio" else -1)) != float(want[k]):
                raise ConfigError(
                    f"{source} is a ViT with {k}={want[k]} but the config builds {k}={net.get(k)}; "
                    "use a config for that encoder (mask_rcnn_vitdet_b_* for ViT-B/16, _l_ for ViT-L/16, "
                    "_tiny_demo for the demo)"
                )
        net.pretrain_img_size = want["pretrain_img_size"]
        net.pretrain_use_cls_token = True
        return
    old_depth = int(net.depth)
    for k, v in want.items():
        net[k] = v
    depth = want["depth"]
    if depth != old_depth or any(i >= depth for i in net.window_block_indexes):
        # ViTDet's pattern: global attention in the last block of each quarter, windows elsewhere.
        step = max(1, depth // 4)
        net.window_block_indexes = [i for i in range(depth) if (i + 1) % step != 0]
    lr_func = cfg.optimizer.params.get("lr_factor_func", None)
    if isinstance(lr_func, partial) and "num_layers" in lr_func.keywords:
        cfg.optimizer.params.lr_factor_func = partial(
            lr_func.func, *lr_func.args, **{**lr_func.keywords, "num_layers": depth}
        )
    patch = want["patch_size"]
    if tuple(cfg.model.backbone.scale_factors) != SCALE_FACTORS[patch]:
        cfg.model.backbone.scale_factors = SCALE_FACTORS[patch]
        cfg.model.backbone.top_block = (
            L(LastLevelMaxPool)() if patch == 16 else L(MaxPoolLevels)(in_feature="p4", num_levels=2)
        )
    log.info(
        "backbone from %s: %s, global blocks %s",
        source,
        want,
        [i for i in range(depth) if i not in net.window_block_indexes],
    )


def set_num_classes(cfg: Any, num_classes: int) -> None:
    if int(cfg.model.roi_heads.num_classes) != num_classes:
        log.info(
            "model.roi_heads.num_classes %s -> %d (the data's categories)",
            cfg.model.roi_heads.num_classes,
            num_classes,
        )
    cfg.model.roi_heads.num_classes = num_classes


def summary(cfg: Any) -> dict[str, Any]:
    """What a record keeps of the config: the numbers that make runs comparable."""
    net = cfg.model.backbone.net
    lr_func = cfg.optimizer.params.get("lr_factor_func", None)
    decay = lr_func.keywords.get("lr_decay_rate") if isinstance(lr_func, partial) else None
    aug = cfg.dataloader.train.mapper.augmentations
    size = next((int(a.target_height) for a in aug if "target_height" in a), None)
    return {
        "max_iter": int(cfg.train.max_iter),
        "total_batch_size": int(cfg.dataloader.train.total_batch_size),
        "lr": float(cfg.optimizer.lr),
        "weight_decay": float(cfg.optimizer.weight_decay),
        "layer_decay": decay,
        "drop_path_rate": float(net.drop_path_rate),
        "image_size": size,
        "milestones": list(cfg.lr_multiplier.scheduler.get("milestones", [])),
        "warmup_length": float(cfg.lr_multiplier.get("warmup_length", 0.0)),
        "amp": bool(cfg.train.amp.enabled),
        "num_classes": int(cfg.model.roi_heads.num_classes),
        "vit": {
            k: net.get(k)
            for k in (
                "patch_size",
                "embed_dim",
                "depth",
                "num_heads",
                "window_size",
                "pretrain_img_size",
                "use_rel_pos",
            )
        },
    }
