"""CLIP teachers through open_clip: the real pretrained tags (``openai`` ...) on a user's machine.

Targets are the raw residual-stream outputs of every block (the official code's HF
``hidden_states[1:]``): after ``ln_pre``, before ``ln_post`` and the projection. For CLIP-L/14 at
196 px the position table is resized from 16x16 to 14x14 (the official "CLIP-L/14*"), so the
teacher sees the same 14x14 token grid as a /16 student at 224 px.
"""

from __future__ import annotations

from typing import Any

import torch

from maskalign.teachers.base import CLIP_MEAN, CLIP_STD, Teacher, TeacherOutput, cls_attention
from maskalign.teachers.registry import register_teacher

# Depths of the ViT towers the paper uses; other names are checked once the model is built.
DEPTHS = {"ViT-B-16": 12, "ViT-B-32": 12, "ViT-L-14": 24, "ViT-L-14-336": 24, "ViT-H-14": 32}


class OpenClipTeacher(Teacher):
    def __init__(self, name: str, pretrained: str | None, input_size: int | None = None,
                 label: str | None = None) -> None:
        import open_clip

        from maskalign.models.pos_embed import resize_pos_embed

        model = open_clip.create_model(name, pretrained=pretrained or None)
        visual = model.visual
        cfg = getattr(visual, "preprocess_cfg", {}) or {}
        super().__init__(tuple(cfg.get("mean", CLIP_MEAN)), tuple(cfg.get("std", CLIP_STD)),
                         input_size or visual.image_size[0])
        if not hasattr(visual, "transformer") or not hasattr(visual, "class_embedding"):
            raise ValueError(f"open_clip model {name!r} is not a ViT")
        patch = visual.conv1.kernel_size[0]
        grid = self.input_size // patch
        if tuple(visual.grid_size) != (grid, grid):
            pos = resize_pos_embed(visual.positional_embedding.data.unsqueeze(0), (grid, grid))[0]
            visual.positional_embedding = torch.nn.Parameter(pos)
            visual.grid_size = (grid, grid)
        self.visual = visual
        self.label = label or f"CLIP-{name}"
        self.dim = visual.transformer.width
        self.depth = len(visual.transformer.resblocks)
        del model  # the text tower is never used
        self.freeze()

    def _run(self, x: torch.Tensor, levels: set[int], with_attn: bool) -> TeacherOutput:
        v = self.visual
        x = v._embeds(x)
        batch_first = getattr(v.transformer, "batch_first", True)
        hidden, attn = {}, None
        for i, blk in enumerate(v.transformer.resblocks):
            xin = x if batch_first else x.transpose(0, 1)
            if with_attn and i == self.depth - 1:
                mha = blk.attn
                d = mha.embed_dim
                w, b = mha.in_proj_weight, mha.in_proj_bias
                attn = cls_attention(blk.ln_1(xin), w[:d], None if b is None else b[:d], w[d:2 * d],
                                     None if b is None else b[d:2 * d], mha.num_heads)
            x = blk(x)
            if i in levels:
                hidden[i] = x if batch_first else x.transpose(0, 1)
        return TeacherOutput(hidden=hidden, cls_attn=attn)


def _depth(cfg: Any) -> int | None:
    return DEPTHS.get(cfg.name)


@register_teacher("open_clip", depth=_depth)
def _build(cfg: Any, student_img_size: int) -> OpenClipTeacher:
    """``teacher.name`` an open_clip model (ViT-B-16), ``teacher.pretrained`` its tag (openai)."""
    return OpenClipTeacher(cfg.name, cfg.pretrained, cfg.input_size or student_img_size, cfg.label)
