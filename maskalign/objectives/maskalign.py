"""MaskAlign (Xue et al., CVPR 2023): align visible student features with the intact image's
teacher features through Dynamic Alignment; no reconstruction. At mask ratio 0 it is feature
distillation (FD).

Forward, as in the official code: teacher on the full image (levels + last-block [CLS]
attention) -> keep ``int(N(1-r))`` patches (attentive or random) -> student on [CLS] + visible
tokens, every block's output kept -> DA -> LN targets gathered at the same positions ->
``sum_j (1/K) 2 SmoothL1``.
"""

from __future__ import annotations

from typing import Any

import torch

from maskalign.alignment import DynamicAlignment, alignment_loss, normalize_target
from maskalign.config import ConfigError
from maskalign.masking import attentive_masking, num_visible, random_masking
from maskalign.models.vit import MaskedViT
from maskalign.objectives.base import Objective, ObjectiveOutput
from maskalign.objectives.registry import build_student, register_objective
from maskalign.teachers.base import Teacher


@register_objective("maskalign")
class MaskAlign(Objective):
    label = "MaskAlign"
    # FD is MaskAlign at mask ratio 0 without DA (``method_id``); the paper's tables call FD under
    # a CLIP teacher "FD-CLIP", and older records spell it out.
    extra_method_labels = {"fd": "FD", "fd-clip": "FD-CLIP", "feature_distillation": "FD"}
    recipes = {"maskalign": "maskalign_vitb16_clipb16_200ep", "fd": "fd_clipb16_vitb16_300ep"}
    uses_teacher = True
    # The student's final norm gets no gradient (the official code discards its output), so DDP
    # must be told that some parameters go unused.
    find_unused_parameters = True

    def __init__(self, encoder: MaskedViT, teacher: Teacher, *, mask_type: str = "attentive",
                 mask_ratio: float = 0.7, deterministic_mask: bool = False, align_type: str = "dynamic",
                 top_k: int = 5, adaptor: str = "linear", adaptor_position: str = "after_mix",
                 target_norm: str = "ln", align_cls: bool = True) -> None:
        super().__init__()
        if mask_type not in ("attentive", "random"):
            raise ValueError(f"unknown mask type {mask_type!r}; use attentive or random")
        num_visible(encoder.num_patches, mask_ratio)  # validates the ratio
        self.encoder, self.teacher = encoder, teacher
        self.mask_type, self.mask_ratio, self.deterministic_mask = mask_type, mask_ratio, deterministic_mask
        self.target_norm, self.align_cls = target_norm, align_cls
        self.da = DynamicAlignment(encoder.embed_dim, encoder.depth, teacher.dim, teacher.depth, top_k,
                                   align_type, adaptor, adaptor_position)
        normalize_target(torch.zeros(1, 2, 4), target_norm)  # validates the name

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        from maskalign.teachers import teacher_depth

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
        depth = teacher_depth(cfg.teacher)  # known from the config alone for most teachers: no download
        if depth is not None and not 1 <= cfg.align.top_k <= depth:
            raise ConfigError(f"align.top_k={cfg.align.top_k} is outside 1..{depth}, the teacher's depth")

    @classmethod
    def from_config(cls, cfg: Any) -> MaskAlign:
        from maskalign.teachers import build_teacher

        encoder = build_student(cfg)
        teacher = build_teacher(cfg.teacher, cfg.student.img_size)
        if not 1 <= cfg.align.top_k <= teacher.depth:
            raise ConfigError(f"align.top_k={cfg.align.top_k} is outside 1..{teacher.depth}, the teacher's depth")
        return cls(encoder, teacher, mask_type=cfg.mask.type, mask_ratio=cfg.mask.ratio,
                   deterministic_mask=cfg.mask.deterministic, align_type=cfg.align.type,
                   top_k=cfg.align.top_k, adaptor=cfg.align.adaptor,
                   adaptor_position=cfg.align.adaptor_position, target_norm=cfg.align.target_norm,
                   align_cls=cfg.align.cls)

    @property
    def method_id(self) -> str:
        """MaskAlign at mask ratio 0 without the DA matrix is feature distillation; tables call it so.

        A ratio-0 run with Dynamic Alignment (Table 4's first row) is still MaskAlign.
        """
        fd = self.mask_ratio == 0 and self.da.weight is None
        return "fd" if fd else "maskalign"

    @property
    def forward_ratio(self) -> float:
        return num_visible(self.encoder.num_patches, self.mask_ratio) / self.encoder.num_patches

    @property
    def reconstruct_ratio(self) -> float:
        return 0.0

    @property
    def supervision(self) -> str:
        return self.teacher.label

    def no_weight_decay(self) -> set[str]:
        return {"da.weight"} if self.da.weight is not None else set()

    def choose_visible(self, cls_attn: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor:
        n = self.encoder.num_patches
        if self.mask_type == "attentive":
            if cls_attn is None or cls_attn.shape[1] != n:
                raise ValueError(f"attentive masking needs the teacher's [CLS] attention over {n} patches")
            return attentive_masking(cls_attn, self.mask_ratio, deterministic=self.deterministic_mask)
        return random_masking(batch, n, self.mask_ratio, device=device)

    def forward(self, images: torch.Tensor) -> ObjectiveOutput:
        levels = self.da.levels
        t = self.teacher(images, levels, with_attn=self.mask_type == "attentive")
        keep = self.choose_visible(t.cls_attn, images.shape[0], images.device)
        preds = self.da(self.encoder.forward_blocks(images, keep))
        idx = keep + 1  # token positions: [CLS] is 0
        if self.align_cls:
            idx = torch.cat([torch.zeros_like(keep[:, :1]), idx], dim=1)
        else:
            preds = [p[:, 1:] for p in preds]
        targets = []
        for lvl in levels:
            y = t.hidden[lvl]
            if y.shape[1] != self.encoder.num_patches + 1:
                raise ValueError(f"teacher gives {y.shape[1] - 1} patch tokens, student has "
                                 f"{self.encoder.num_patches}: set teacher.input_size so the grids match")
            y = normalize_target(y, self.target_norm)
            targets.append(torch.gather(y, 1, idx.unsqueeze(-1).expand(-1, -1, y.shape[-1])))
        loss = alignment_loss(preds, targets)
        return ObjectiveOutput(loss, {"align_loss": loss.detach()})
