"""The teacher interface: per-block features of the intact image, and where its [CLS] looks.

Every backend (open_clip CLIP, timm ViTs such as DINO, a checkpoint of this project) takes the
student's ImageNet-normalised batch, converts it to its own input normalisation and resolution,
and returns raw block outputs (no final LayerNorm, no projection: the official MaskAlign targets)
plus the last block's [CLS]->patch attention averaged over heads, for attentive masking.
Teachers are frozen, in eval mode, and run without autograd.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class TeacherOutput:
    hidden: dict[int, torch.Tensor]  # 0-based block index -> (B, 1+N, D)
    cls_attn: torch.Tensor | None  # (B, N), rows sum to 1 over patches (approximately; CLS->CLS dropped)


def cls_attention(q_in: torch.Tensor, q_w: torch.Tensor, q_b: torch.Tensor | None, k_w: torch.Tensor,
                  k_b: torch.Tensor | None, num_heads: int) -> torch.Tensor:
    """Softmax attention of the [CLS] query over all keys, averaged over heads, patch keys only.

    Fused attention kernels do not return weights, so the last block's attention is recomputed
    from its projections: only one query row is needed, which costs O(N) rather than O(N^2).
    """
    b, n, d = q_in.shape
    hd = d // num_heads
    q = F.linear(q_in[:, :1], q_w, q_b).reshape(b, 1, num_heads, hd).transpose(1, 2)
    k = F.linear(q_in, k_w, k_b).reshape(b, n, num_heads, hd).transpose(1, 2)
    attn = (q.float() @ k.float().transpose(-2, -1)) * hd ** -0.5
    return attn.softmax(dim=-1).mean(dim=1)[:, 0, 1:]


class Teacher(nn.Module):
    """Base class: what every objective may ask of a teacher.

    * ``teacher(images, levels, with_attn)`` -> :class:`TeacherOutput`: ``hidden[i]`` for every
      requested 0-based block ``i`` in ``levels``, ``(B, 1 + N, dim)`` with the [CLS] slot first,
      and with ``with_attn`` the last block's [CLS]->patch attention ``(B, N)``, non-negative,
      each row summing to 1 minus the [CLS] query's share on itself (exactly 1 for a teacher
      without a [CLS] key). Without autograd; the input is the student's ImageNet-normalised batch.
    * ``dim`` (token width), ``depth`` (blocks: valid levels are ``0 .. depth-1``), ``label``
      (how tables name the supervision) and ``input_size`` (the side it resizes inputs to; ``None``:
      as given).

    Subclasses call ``Teacher.__init__`` with their input normalisation, set ``dim``, ``depth`` and
    ``label``, call :meth:`freeze` last (which checks those three) and implement ``_run``.
    """

    dim: int = 0
    depth: int = 0
    label: str = ""
    input_size: int | None

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], input_size: int | None) -> None:
        super().__init__()
        self.input_size = input_size
        self.register_buffer("_in_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_in_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def freeze(self) -> Teacher:
        """Frozen and in eval mode for good; refuses a subclass that left its declarations unset."""
        if self.dim < 1 or self.depth < 1 or not self.label:
            raise TypeError(f"{type(self).__name__} must set dim, depth and label before freeze() "
                            f"(got {self.dim}, {self.depth}, {self.label!r})")
        for p in self.parameters():
            p.requires_grad_(False)
        return self.eval()

    def train(self, mode: bool = True) -> Teacher:
        # A frozen teacher stays in eval mode even when the surrounding model is put in train mode.
        return super().train(False)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """ImageNet-normalised student input -> this teacher's normalisation and resolution."""
        x = images * self._in_std + self._in_mean
        x = (x - self._mean) / self._std
        if self.input_size is not None and x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bicubic", align_corners=False)
        return x

    @torch.no_grad()
    def forward(self, images: torch.Tensor, levels: list[int], with_attn: bool = True) -> TeacherOutput:
        return self._run(self.prepare(images), set(levels), with_attn)

    def _run(self, x: torch.Tensor, levels: set[int], with_attn: bool) -> TeacherOutput:
        raise NotImplementedError
