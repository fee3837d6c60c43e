"""Objective registry: ``build_objective(cfg)`` turns a resolved pre-training config into a model.

Each builder validates its own combination of settings and refuses a wrong one with a
``ConfigError`` of one line, before any data is read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from maskalign.config import ConfigError
from maskalign.objectives.base import Objective, ObjectiveOutput

__all__ = ["OBJECTIVES", "Objective", "ObjectiveOutput", "build_objective", "register_objective"]

OBJECTIVES: dict[str, Callable[[Any], Objective]] = {}


def register_objective(name: str) -> Callable[[Callable[[Any], Objective]], Callable[[Any], Objective]]:
    def deco(fn: Callable[[Any], Objective]) -> Callable[[Any], Objective]:
        OBJECTIVES[name] = fn
        return fn

    return deco


def build_student(cfg: Any):
    from maskalign.models.vit import ARCHS, build_vit

    if cfg.student.arch not in ARCHS:
        raise ConfigError(f"student.arch: unknown {cfg.student.arch!r}; known: {', '.join(ARCHS)}")
    if cfg.student.img_size % cfg.student.patch_size:
        raise ConfigError(f"student.img_size {cfg.student.img_size} is not a multiple of "
                          f"student.patch_size {cfg.student.patch_size}")
    return build_vit(cfg.student.arch, cfg.student.img_size, cfg.student.patch_size, cfg.student.drop_path)


@register_objective("maskalign")
def _maskalign(cfg: Any) -> Objective:
    from maskalign.objectives.maskalign import MaskAlign
    from maskalign.teachers import build_teacher
    from maskalign.teachers.depth import teacher_depth

    if cfg.teacher.backend == "none":
        raise ConfigError("method=maskalign needs a teacher (teacher.backend is none)")
    if cfg.mask.type not in ("attentive", "random"):
        raise ConfigError(f"mask.type: unknown {cfg.mask.type!r}; use attentive or random")
    if not 0.0 <= cfg.mask.ratio < 1.0:
        raise ConfigError(f"mask.ratio must be in [0, 1), got {cfg.mask.ratio}")
    if cfg.align.type not in ("dynamic", "layerwise"):
        raise ConfigError(f"align.type: unknown {cfg.align.type!r}; use dynamic or layerwise")
    if cfg.align.target_norm not in ("ln", "bn", "batchnorm", "none"):
        raise ConfigError(f"align.target_norm: unknown {cfg.align.target_norm!r}; use ln, bn, batchnorm or none")
    if cfg.align.adaptor not in ("linear", "mlp"):
        raise ConfigError(f"align.adaptor: unknown {cfg.align.adaptor!r}; use linear or mlp")
    depth = teacher_depth(cfg.teacher)
    if depth is not None and not 1 <= cfg.align.top_k <= depth:
        raise ConfigError(f"align.top_k={cfg.align.top_k} is outside 1..{depth}, the teacher's depth")
    encoder = build_student(cfg)
    teacher = build_teacher(cfg.teacher, cfg.student.img_size)
    if not 1 <= cfg.align.top_k <= teacher.depth:
        raise ConfigError(f"align.top_k={cfg.align.top_k} is outside 1..{teacher.depth}, the teacher's depth")
    return MaskAlign(encoder, teacher, mask_type=cfg.mask.type, mask_ratio=cfg.mask.ratio,
                     deterministic_mask=cfg.mask.deterministic, align_type=cfg.align.type,
                     top_k=cfg.align.top_k, adaptor=cfg.align.adaptor,
                     adaptor_position=cfg.align.adaptor_position, target_norm=cfg.align.target_norm,
                     align_cls=cfg.align.cls)



def _check_pixel_method(cfg: Any) -> None:
    """Settings shared by the pixel-reconstruction objectives (MAE, CrossMAE, LUT): no teacher."""
    m = cfg.method
    if cfg.mask.type == "attentive":
        raise ConfigError(f"mask.type=attentive needs a teacher's [CLS] attention, which method={m} "
                          f"does not have; use mask.type=random")
    if cfg.mask.type != "random":
        raise ConfigError(f"mask.type: unknown {cfg.mask.type!r}; method={m} uses random")
    if cfg.mask.deterministic:
        raise ConfigError(f"mask.deterministic applies to attentive masking only; method={m} masks at random")
    if cfg.teacher.backend != "none":
        raise ConfigError(f"method={m} uses no teacher; set teacher.backend=none "
                          f"(it is {cfg.teacher.backend})")
    if not 0.0 < cfg.mask.ratio < 1.0:
        raise ConfigError(f"mask.ratio must be in (0, 1) for method={m}, got {cfg.mask.ratio}")


def _check_decoder(section: str, dec: Any) -> None:
    if dec.decoder_depth < 1:
        raise ConfigError(f"{section}.decoder_depth must be at least 1, got {dec.decoder_depth}")
    if dec.decoder_dim % 4:
        raise ConfigError(f"{section}.decoder_dim={dec.decoder_dim} must be divisible by 4 (2-D sin-cos)")
    if dec.decoder_heads < 1 or dec.decoder_dim % dec.decoder_heads:
        raise ConfigError(f"{section}.decoder_dim={dec.decoder_dim} is not divisible by "
                          f"{section}.decoder_heads={dec.decoder_heads}")


@register_objective("mae")
def _mae(cfg: Any) -> Objective:
    from maskalign.objectives.mae import MAE

    _check_pixel_method(cfg)
    _check_decoder("mae", cfg.mae)
    m = cfg.mae
    return MAE(build_student(cfg), mask_ratio=cfg.mask.ratio, decoder_dim=m.decoder_dim,
               decoder_depth=m.decoder_depth, decoder_heads=m.decoder_heads, norm_pix_loss=m.norm_pix_loss)


@register_objective("crossmae")
def _crossmae(cfg: Any) -> Objective:
    from maskalign.objectives.crossmae import LR_SCALES, CrossMAE

    _check_pixel_method(cfg)
    c = cfg.crossmae
    _check_decoder("crossmae", c)
    if not 0.0 < c.kept_mask_ratio <= cfg.mask.ratio:
        raise ConfigError(f"crossmae.kept_mask_ratio={c.kept_mask_ratio} must be in (0, mask.ratio="
                          f"{cfg.mask.ratio}]: only masked patches can be predicted")
    if c.lr_scale not in LR_SCALES:
        raise ConfigError(f"crossmae.lr_scale: unknown {c.lr_scale!r}; use {', '.join(LR_SCALES)}")
    encoder = build_student(cfg)
    n = encoder.num_patches
    if n - int(n * (1 - cfg.mask.ratio)) - int(n * (cfg.mask.ratio - c.kept_mask_ratio)) < 1:
        raise ConfigError(f"crossmae.kept_mask_ratio={c.kept_mask_ratio} predicts no patch of {n}")
    return CrossMAE(encoder, mask_ratio=cfg.mask.ratio, kept_mask_ratio=c.kept_mask_ratio,
                    decoder_dim=c.decoder_dim, decoder_depth=c.decoder_depth, decoder_heads=c.decoder_heads,
                    use_input=c.use_input, norm_pix_loss=c.norm_pix_loss, lr_scale=c.lr_scale)


@register_objective("lut")
def _lut(cfg: Any) -> Objective:
    from maskalign.objectives.lut import LUT

    _check_pixel_method(cfg)
    _check_decoder("mae", cfg.mae)
    m, u = cfg.mae, cfg.lut
    if cfg.mask.ratio < 0.5:
        raise ConfigError(f"method=lut needs mask.ratio >= 0.5 (two disjoint visible sets), got {cfg.mask.ratio}")
    if not 0.0 <= u.ema_momentum <= 1.0:
        raise ConfigError(f"lut.ema_momentum must be in [0, 1], got {u.ema_momentum}")
    if u.head_depth < 1 or u.pred_depth < 1:
        raise ConfigError(f"lut.head_depth and lut.pred_depth must be at least 1 "
                          f"(got {u.head_depth}, {u.pred_depth})")
    if u.mlp_norm not in ("bn", "ln", "none"):
        raise ConfigError(f"lut.mlp_norm: unknown {u.mlp_norm!r}; use bn, ln or none")
    if u.mlp_act not in ("relu", "gelu"):
        raise ConfigError(f"lut.mlp_act: unknown {u.mlp_act!r}; use relu or gelu")
    return LUT(build_student(cfg), mask_ratio=cfg.mask.ratio, decoder_dim=m.decoder_dim,
               decoder_depth=m.decoder_depth, decoder_heads=m.decoder_heads, norm_pix_loss=m.norm_pix_loss,
               mae_weight=u.mae_weight, bc_weight=u.bc_weight, ema_momentum=u.ema_momentum,
               head_depth=u.head_depth, pred_depth=u.pred_depth, mlp_dim=u.mlp_dim, mlp_norm=u.mlp_norm,
               mlp_act=u.mlp_act)

def build_objective(cfg: Any) -> Objective:
    if cfg.method not in OBJECTIVES:
        raise ConfigError(f"method: unknown {cfg.method!r}; known: {', '.join(sorted(OBJECTIVES))}")
    return OBJECTIVES[cfg.method](cfg)
