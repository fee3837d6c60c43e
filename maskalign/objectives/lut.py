"""LUT (Kim et al., 2024, "Learning with Unmasked Tokens Drives Stronger Vision Learners").

MAE plus a "broader context" (BC) loss on the *unmasked* tokens, as in ``naver-ai/lut``:

* **Two views** of one image share a simple crop (resize the shorter side, random crop with
  4-pixel reflect padding, horizontal flip). View 1 gets nothing else; view 2 gets colour jitter
  (p 0.8) and one of grayscale / solarize / Gaussian blur (``train_transform``).
* **Disjoint visible sets** from one permutation per image: view 1 keeps positions
  ``[0, n)`` of the shuffle, view 2 the next ``[n, 2n)``, ``n = int(N(1-r))``; each view goes
  through the student encoder (with final norm).
* **MAE loss** (norm-pix, masked patches) on view 1 only, with MAE's decoder.
* **BC loss**: the mean of each view's visible patch tokens (no [CLS]) goes through a projector
  and a predictor; an EMA copy of encoder + projector encodes the *other* view whole (no
  masking, eval mode) into the target; the loss is ``2 - 2 cos`` averaged over the batch, cross
  view only (student 1 vs EMA 2, student 2 vs EMA 1), the two terms averaged. Total =
  ``mae_weight * MAE + bc_weight * BC`` (0.25 for BC in the recipe).
* **EMA**: ``ema <- m ema + (1-m) student`` over the state dict (BatchNorm running statistics
  too), after every optimizer step, ``m`` cosine from ``ema_momentum`` (0.996) to 1 over training.
* Projector and predictor: ``depth`` bias-free Linear layers, hidden width ``mlp_dim`` (4096
  for ViT-B), output the encoder width, BN (or LN, or none) + ReLU (or GELU) between layers.

The EMA branch is the submodule ``ema``: it is saved in every checkpoint and restored on
resume (the released code's EMA restore is broken: its loader calls undefined functions inside
a bare ``except``, so a resumed run silently restarts the EMA from the fresh weights). Its
parameters never reach the optimizer (``requires_grad=False``) and never go into the exported
encoder. The learning-rate rule is ``blr * sqrt(batch) / 4`` (``optim.lr_rule: sqrt``).

Under DDP the official code converts BN to SyncBatchNorm; here the projector's BatchNorm uses
per-process batch statistics.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision import transforms as T

from maskalign.config import ConfigError
from maskalign.models.init import init_linear_and_norm
from maskalign.models.vit import MaskedViT
from maskalign.objectives.base import ObjectiveOutput
from maskalign.objectives.mae import MAE
from maskalign.objectives.registry import build_student, register_objective
from maskalign.teachers.base import IMAGENET_MEAN, IMAGENET_STD


def build_mlp(depth: int, in_dim: int, hidden_dim: int, out_dim: int, norm: str = "bn",
              act: str = "relu") -> nn.Sequential:
    """``depth`` bias-free Linear layers; norm + activation between them, none after the last."""
    if depth < 1:
        raise ValueError(f"an MLP needs at least one layer, got depth {depth}")
    layers: list[nn.Module] = []
    for i in range(depth):
        last = i == depth - 1
        layers.append(nn.Linear(in_dim if i == 0 else hidden_dim, out_dim if last else hidden_dim, bias=False))
        if not last:
            if norm == "bn":
                layers.append(nn.BatchNorm1d(hidden_dim))
            elif norm == "ln":
                layers.append(nn.LayerNorm(hidden_dim))
            elif norm != "none":
                raise ValueError(f"unknown MLP norm {norm!r}; use bn, ln or none")
            if act == "relu":
                layers.append(nn.ReLU(inplace=True))
            elif act == "gelu":
                layers.append(nn.GELU())
            else:
                raise ValueError(f"unknown MLP activation {act!r}; use relu or gelu")
    mlp = nn.Sequential(*layers)
    init_linear_and_norm(mlp)
    return mlp


def ema_momentum(base: float, progress: float) -> float:
    """Cosine schedule from ``base`` at the start (progress 0) to 1 at the end (progress 1)."""
    progress = min(max(progress, 0.0), 1.0)
    return 1.0 - (1.0 - base) * (1.0 + math.cos(math.pi * progress)) / 2.0


def bc_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``2 - 2 cos(pred, target)`` per sample, averaged over the batch."""
    return (2.0 - 2.0 * F.cosine_similarity(pred.float(), target.float(), dim=-1)).mean()


class SharedCropViews:
    """LUT's two views: one shared simple crop, then plain (view 1) and colour-augmented (view 2)."""

    def __init__(self, img_size: int) -> None:
        blur_kernel = max(3, int(0.1 * img_size) // 2 * 2 + 1)
        self.crop = T.Compose([
            T.Resize(img_size, interpolation=T.InterpolationMode.BICUBIC),
            T.RandomCrop(img_size, padding=4, padding_mode="reflect"),
            T.RandomHorizontalFlip(),
        ])
        finish = [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
        self.view1 = T.Compose(finish)
        self.view2 = T.Compose([
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
            T.RandomChoice([
                T.Grayscale(num_output_channels=3),
                T.RandomSolarize(threshold=128, p=1.0),
                T.GaussianBlur(blur_kernel, sigma=(0.1, 2.0)),
            ]),
            *finish,
        ])

    def __call__(self, img):
        crop = self.crop(img)
        return [self.view1(crop), self.view2(crop)]


class EMABranch(nn.Module):
    """The momentum encoder + projector: encodes a whole view (no masking), always in eval mode."""

    def __init__(self, encoder: MaskedViT, projector: nn.Module) -> None:
        super().__init__()
        self.encoder = copy.deepcopy(encoder)
        self.projector = copy.deepcopy(projector)
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> EMABranch:
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        z = self.encoder(images)
        return self.projector(z[:, 1:].mean(dim=1))


def _strip_compile(name: str) -> str:
    return name.replace("_orig_mod.", "")


@register_objective("lut")
class LUT(MAE):
    """MAE + broader-context loss on the unmasked tokens against an EMA teacher.

    Args:
        encoder: the student ViT.
        mask_ratio: fraction hidden from each view; at least 0.5 so the two visible sets are disjoint.
        decoder_dim, decoder_depth, decoder_heads, norm_pix_loss: MAE's decoder and target.
        mae_weight, bc_weight: weights of the two losses (1 and 0.25).
        ema_momentum: the EMA momentum at the start of training (0.996), cosine to 1.
        head_depth, pred_depth, mlp_dim, mlp_norm, mlp_act: projector and predictor MLPs.
    """

    label = "LUT"
    recipes = {"lut": "lut_vitb16_1600ep"}
    num_views = 2

    def __init__(self, encoder: MaskedViT, *, mask_ratio: float = 0.75, decoder_dim: int = 512,
                 decoder_depth: int = 8, decoder_heads: int = 16, mlp_ratio: float = 4.0,
                 norm_pix_loss: bool = True, mae_weight: float = 1.0, bc_weight: float = 0.25,
                 ema_momentum: float = 0.996, head_depth: int = 2, pred_depth: int = 2,
                 mlp_dim: int = 4096, mlp_norm: str = "bn", mlp_act: str = "relu") -> None:
        super().__init__(encoder, mask_ratio=mask_ratio, decoder_dim=decoder_dim, decoder_depth=decoder_depth,
                         decoder_heads=decoder_heads, mlp_ratio=mlp_ratio, norm_pix_loss=norm_pix_loss)
        if 2 * self.num_keep > encoder.num_patches:
            raise ValueError(f"LUT's two disjoint visible sets need mask ratio >= 0.5, got {mask_ratio}")
        if not 0.0 <= ema_momentum <= 1.0:
            raise ValueError(f"ema_momentum must be in [0, 1], got {ema_momentum}")
        self.mae_weight, self.bc_weight, self.base_momentum = mae_weight, bc_weight, ema_momentum
        d = encoder.embed_dim
        self.projector = build_mlp(head_depth, d, mlp_dim, d, mlp_norm, mlp_act)
        self.predictor = build_mlp(pred_depth, d, mlp_dim, d, mlp_norm, mlp_act)
        self.ema = EMABranch(self.encoder, self.projector)
        self.momentum = ema_momentum  # the value used by the last update (logged)

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        super().check_config(cfg)  # MAE's part: random masking, no teacher, the ``mae`` decoder
        u = cfg.lut
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

    @classmethod
    def from_config(cls, cfg: Any) -> LUT:
        m, u = cfg.mae, cfg.lut
        return cls(build_student(cfg), mask_ratio=cfg.mask.ratio, decoder_dim=m.decoder_dim,
                   decoder_depth=m.decoder_depth, decoder_heads=m.decoder_heads, norm_pix_loss=m.norm_pix_loss,
                   mae_weight=u.mae_weight, bc_weight=u.bc_weight, ema_momentum=u.ema_momentum,
                   head_depth=u.head_depth, pred_depth=u.pred_depth, mlp_dim=u.mlp_dim, mlp_norm=u.mlp_norm,
                   mlp_act=u.mlp_act)

    def train_transform(self, cfg: Any) -> SharedCropViews:
        return SharedCropViews(cfg.student.img_size)

    def choose_visible_pair(self, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Two disjoint visible sets from one permutation per image: ``[0, n)`` and ``[n, 2n)``."""
        n = self.num_keep
        ids = torch.rand(batch, self.encoder.num_patches, device=device).argsort(dim=1)
        return ids[:, :n], ids[:, n:2 * n]

    def online(self, latent: torch.Tensor) -> torch.Tensor:
        """Student branch: mean of the visible patch tokens -> projector -> predictor."""
        return self.predictor(self.projector(latent[:, 1:].mean(dim=1)))

    def forward(self, images: list[torch.Tensor] | tuple[torch.Tensor, torch.Tensor]) -> ObjectiveOutput:
        if isinstance(images, torch.Tensor) or len(images) != 2:
            raise ValueError("LUT takes two views per image (use its train_transform)")
        v1, v2 = images
        b = v1.shape[0]
        keep1, keep2 = self.choose_visible_pair(b, v1.device)
        # One encoder pass for both views: they have the same number of visible tokens.
        z1, z2 = self.encoder(torch.cat([v1, v2]), torch.cat([keep1, keep2])).split(b)
        mae_loss = self.masked_pixel_loss(v1, self.decode(z1, keep1), keep1)
        q1, q2 = self.online(z1), self.online(z2)
        t1, t2 = self.ema(torch.cat([v1, v2])).split(b)
        bc = 0.5 * (bc_loss(q1, t2) + bc_loss(q2, t1))
        loss = self.mae_weight * mae_loss + self.bc_weight * bc
        return ObjectiveOutput(loss, {"mae_loss": mae_loss.detach(), "bc_loss": bc.detach()})

    @torch.no_grad()
    def update_ema(self, momentum: float) -> None:
        """``ema <- m ema + (1-m) student`` over encoder and projector state (integer buffers copied)."""
        for ema_mod, mod in ((self.ema.encoder, self.encoder), (self.ema.projector, self.projector)):
            student = {_strip_compile(k): v for k, v in mod.state_dict().items()}
            for k, e in ema_mod.state_dict().items():
                s = student[k].detach()
                if e.is_floating_point():
                    e.mul_(momentum).add_(s.to(e.dtype), alpha=1.0 - momentum)
                else:
                    e.copy_(s)

    def after_optimizer_step(self, progress: float) -> None:
        self.momentum = ema_momentum(self.base_momentum, progress)
        self.update_ema(self.momentum)
