"""Teachers that are timm VisionTransformers: DINO (or any timm ViT) and this project's own exports.

Backends ``timm`` (a timm model by name) and ``local`` (a file of this project: an exported ViT
encoder, or the demo world's token-CNN teacher; the sidecar ``.json`` tells which).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from maskalign.teachers.base import IMAGENET_MEAN, IMAGENET_STD, Teacher, TeacherOutput, cls_attention
from maskalign.teachers.registry import register_teacher

_TIMM_DEPTHS = {"tiny": 12, "small": 12, "base": 12, "large": 24, "huge": 32}


class TimmTeacher(Teacher):
    """Wraps a ``timm.models.vision_transformer.VisionTransformer`` with a [CLS] token."""

    def __init__(self, model: torch.nn.Module, label: str, mean: tuple[float, ...] = IMAGENET_MEAN,
                 std: tuple[float, ...] = IMAGENET_STD, input_size: int | None = None) -> None:
        super().__init__(mean, std, input_size)
        if getattr(model, "cls_token", None) is None:
            raise ValueError(f"teacher {label}: a ViT with a [CLS] token is needed")
        self.model, self.label = model, label
        self.dim, self.depth = model.embed_dim, len(model.blocks)
        self.freeze()

    def _run(self, x: torch.Tensor, levels: set[int], with_attn: bool) -> TeacherOutput:
        m = self.model
        x = m.norm_pre(m.patch_drop(m._pos_embed(m.patch_embed(x))))
        hidden, attn = {}, None
        for i, blk in enumerate(m.blocks):
            if with_attn and i == self.depth - 1:
                a = blk.attn
                w, b = a.qkv.weight, a.qkv.bias
                d = w.shape[1]
                h = blk.norm1(x)
                qb = b[:d] if b is not None else None
                kb = b[d:2 * d] if b is not None else None
                if not isinstance(a.q_norm, torch.nn.Identity) or not isinstance(a.k_norm, torch.nn.Identity):
                    raise NotImplementedError(f"teacher {self.label}: attention with q/k norm is not supported")
                attn = cls_attention(h, w[:d], qb, w[d:2 * d], kb, a.num_heads)
            x = blk(x)
            if i in levels:
                hidden[i] = x
        return TeacherOutput(hidden=hidden, cls_attn=attn)


def timm_teacher(name: str, pretrained: bool = True, input_size: int | None = None,
                 label: str | None = None) -> TimmTeacher:
    """Any timm ViT by name, e.g. ``vit_base_patch16_224.dino`` for DINO-B/16."""
    import timm

    model = timm.create_model(name, pretrained=pretrained, num_classes=0)
    cfg = model.pretrained_cfg or {}
    return TimmTeacher(model, label or name, tuple(cfg.get("mean", IMAGENET_MEAN)),
                       tuple(cfg.get("std", IMAGENET_STD)), input_size)


def local_teacher(path: str | Path, input_size: int | None = None, label: str | None = None) -> TimmTeacher:
    """An encoder exported by this project (timm key names plus a ``.json`` sidecar with its arch)."""
    from maskalign.checkpoint import build_timm_vit, load_encoder_state

    state, meta = load_encoder_state(path)
    model = build_timm_vit(meta["arch"], state)
    return TimmTeacher(model, label or meta.get("label") or f"local:{Path(path).name}",
                       input_size=input_size)


def _timm_depth(cfg: Any) -> int | None:
    m = re.match(r"vit_(tiny|small|base|large|huge)_", cfg.name or "")
    return _TIMM_DEPTHS[m.group(1)] if m else None


@register_teacher("timm", depth=_timm_depth)
def _build_timm(cfg: Any, student_img_size: int) -> TimmTeacher:
    """``teacher.name`` a timm ViT (``vit_base_patch16_224.dino``), ``teacher.pretrained`` true/false."""
    return timm_teacher(cfg.name, bool(cfg.pretrained), cfg.input_size or None, cfg.label)


def _sidecar_depth(cfg: Any) -> int | None:
    side = Path(cfg.checkpoint).with_suffix(".json") if cfg.checkpoint else None
    if side is None or not side.is_file():
        return None
    try:
        return int(json.loads(side.read_text())["arch"]["depth"])
    except (KeyError, ValueError, TypeError):
        return None


def load_local_teacher(path: str | Path, input_size: int | None = None, label: str | None = None) -> Teacher:
    """A teacher file of this project: an exported ViT encoder, or a demo teacher (token CNN)."""
    from maskalign.teachers.demo_teacher import is_token_cnn, load_demo_teacher

    if is_token_cnn(path):
        return load_demo_teacher(path, input_size, label)
    return local_teacher(path, input_size, label)


@register_teacher("local", depth=_sidecar_depth)
def _build_local(cfg: Any, student_img_size: int) -> Teacher:
    """``teacher.checkpoint`` a file of this project (see :func:`load_local_teacher`)."""
    if not cfg.checkpoint:
        from maskalign.config import ConfigError

        raise ConfigError("teacher.backend=local needs teacher.checkpoint")
    return load_local_teacher(cfg.checkpoint, cfg.input_size or None, cfg.label)
