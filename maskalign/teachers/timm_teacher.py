"""Teachers that are timm VisionTransformers: DINO (or any timm ViT) and this project's own exports."""

from __future__ import annotations

from pathlib import Path

import torch

from maskalign.teachers.base import IMAGENET_MEAN, IMAGENET_STD, Teacher, TeacherOutput, cls_attention


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
