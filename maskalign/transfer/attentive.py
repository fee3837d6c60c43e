"""Attentive probing: a learned query cross-attends to the frozen patch tokens, then one linear layer.

V-JEPA's ``AttentivePooler`` + ``AttentiveClassifier`` (``src/models/attentive_pooler.py``,
``evals/image_classification_frozen/``), the probe AIM and V-JEPA report:

* tokens: the last block's patch tokens after the encoder's final norm (prefix tokens -- [CLS],
  registers -- not read); the encoder is frozen and runs without gradients;
* pooling (depth 1): one query (``trunc_normal_(std=0.02)``) and one cross-attention block with
  residuals: ``q = q + xattn(q, LN(x))``, then ``q = q + MLP(LN(q))`` (GELU, ratio 4); the
  attention projects q, k, v with biases and has no output projection (V-JEPA defines ``proj``
  but never applies it); no final norm; then ``Linear(D, classes)``. Linear weights start from
  ``trunc_normal_(std=0.02)``, biases from 0, LayerNorms from (1, 0).
* recipe (V-JEPA's ImageNet config, ``vjepa_in1k.yaml``): AdamW, lr 1e-3 cosine to 0, no warm-up;
  weight decay 1e-3 cosine to 1e-6 (none on biases and 1-D tensors; the query decays); gradient clipping 1.0;
  20 epochs at batch 1024, 224 px; timm's AutoAugment ('original') and random erasing 0.25.
* AIM v1's probe differs (BatchNorm over the tokens, the query used directly as q, no residual
  or MLP, tokens averaged over the last 6 blocks before the norm); its repository gives no
  training recipe, so the V-JEPA block and recipe are the ones built here.

The probe trains through the classification loop (:func:`maskalign.transfer.trainer.fit`):
val top-1/top-5 every epoch, ``checkpoint.pth`` for resuming (pooler and head only -- the encoder
is frozen and reloaded from the source), the record.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from maskalign.tasks.context import RunContext
from maskalign.transfer.features import frozen_encoder, num_prefix
from maskalign.transfer.trainer import Schedule, fit


class CrossAttention(nn.Module):
    """Multi-head attention of queries over tokens: q from the queries, k and v from the tokens; no
    output projection."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attentive probe: {num_heads} heads do not divide width {dim}")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)

    def forward(self, q: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        b, n, c = q.shape
        h = self.num_heads
        q = self.q(q).reshape(b, n, h, c // h).transpose(1, 2)
        k, v = self.kv(x).reshape(b, x.shape[1], 2, h, c // h).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(c / h)) v
        return out.transpose(1, 2).reshape(b, n, c)


class AttentivePooler(nn.Module):
    """One learned query, one cross-attention block with residuals and an MLP: (B, N, D) -> (B, D)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 init_std: float = 0.02) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.zeros(1, 1, dim))
        self.norm1 = nn.LayerNorm(dim)
        self.xattn = CrossAttention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        nn.init.trunc_normal_(self.query, std=init_std)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=init_std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        q = self.query.expand(tokens.shape[0], -1, -1)
        q = q + self.xattn(q, self.norm1(tokens))
        q = q + self.mlp(self.norm2(q))
        return q.squeeze(1)


class AttentiveClassifier(nn.Module):
    """Frozen encoder -> patch tokens -> :class:`AttentivePooler` -> ``Linear``.

    The encoder is held outside the module's parameters and state dict: it is frozen, and a
    checkpoint of the probe holds only what trains.
    """

    def __init__(self, encoder: nn.Module, num_classes: int, num_heads: int, mlp_ratio: float = 4.0,
                 init_std: float = 0.02) -> None:
        super().__init__()
        self._frozen = [encoder]  # a list: not a registered submodule
        dim = int(encoder.embed_dim)  # type: ignore[arg-type]
        self.pooler = AttentivePooler(dim, num_heads, mlp_ratio, init_std=init_std)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=init_std)
        nn.init.zeros_(self.head.bias)

    @property
    def encoder(self) -> nn.Module:
        return self._frozen[0]

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            x = self.encoder.forward_features(images)  # type: ignore[operator]
        return x[:, num_prefix(self.encoder):]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.pooler(self.tokens(images)))


class CosineDecayAdamW(torch.optim.AdamW):
    """AdamW whose weight decay follows the lr's cosine: ``wd_end + (wd - wd_end) * lr / peak_lr``.

    With no warm-up and a cosine to 0 (V-JEPA's schedule), ``lr / peak_lr`` is the cosine factor,
    so the decay goes from ``wd`` to ``wd_end`` on the same curve, as V-JEPA's ``CosineWDSchedule``.
    """

    def __init__(self, params: Any, lr: float, weight_decay: float, final_weight_decay: float, **kw: Any) -> None:
        super().__init__(params, lr=lr, weight_decay=weight_decay, **kw)
        self.peak_lr, self.final_wd = float(lr), float(final_weight_decay)
        for g in self.param_groups:
            g["base_wd"] = g["weight_decay"]

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        for g in self.param_groups:
            if g["base_wd"] > 0:
                frac = g["lr"] / self.peak_lr if self.peak_lr > 0 else 0.0
                g["weight_decay"] = self.final_wd + (g["base_wd"] - self.final_wd) * frac
        return super().step(closure)


def param_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """V-JEPA's two groups: no decay on biases and 1-D tensors (LayerNorms); every other tensor,
    the (1, 1, D) query included, decays."""
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or "bias" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def probe_mode(model: nn.Module) -> None:
    """The frozen encoder in eval mode; pooler and head training."""
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    inner.train()
    inner.encoder.eval()


def run(ctx: RunContext) -> dict[str, Any]:
    """Train an attentive probe on the context's frozen encoder under its config (resuming if possible)."""
    from maskalign.engine.rng import seed_everything
    from maskalign.transfer.data import (
        classification_sets,
        encoder_preprocess,
        eval_loader,
        finetune_train_transform,
        per_process_batch,
        train_loader,
    )

    cfg, info = ctx.config, ctx.dist
    seed_everything(int(cfg.seed) + info.rank)
    src = ctx.source
    img_size = int(cfg.model.img_size or src.arch["img_size"])
    prep = encoder_preprocess(src.meta)  # the encoder's own statistics and interpolation
    train_t = finetune_train_transform(img_size, cfg.aug, prep)
    train_set, val_set, root, kind = classification_sets(cfg, img_size, train_t, prep)
    num_classes = len(train_set.classes)
    encoder = frozen_encoder(src, img_size, info.device)
    heads = int(cfg.model.num_heads or src.arch["num_heads"])
    model = AttentiveClassifier(encoder, num_classes, heads, float(cfg.model.mlp_ratio),
                                float(cfg.model.init_std)).to(info.device)
    per = per_process_batch(cfg.optim.total_batch_size, info.world_size, cfg.optim.accum_iter)
    tl, sampler = train_loader(train_set, per, info, int(cfg.seed), int(cfg.data.num_workers))
    vl = eval_loader(val_set, max(per, 64), info, int(cfg.data.num_workers))
    lr = float(cfg.optim.lr)
    optimizer = CosineDecayAdamW(param_groups(model, float(cfg.optim.weight_decay)), lr=lr,
                                 weight_decay=float(cfg.optim.weight_decay),
                                 final_weight_decay=float(cfg.optim.final_weight_decay),
                                 betas=tuple(float(b) for b in cfg.optim.betas))
    if info.is_main:
        n_train = sum(p.numel() for p in model.parameters())
        print(f"[attentive] {cfg.name}: {src.path} -> {num_classes} classes of {root} ({kind}); pooler with "
              f"{heads} heads + linear ({n_train} trainable parameters), AdamW lr {lr:g}, batch "
              f"{cfg.optim.total_batch_size}, {cfg.optim.epochs} epochs, {img_size}px, device {info.device}",
              flush=True)
    saved = {"run": str(cfg.name), "task": "attentive", "classes": list(train_set.classes), "meta": src.meta,
             "probe": {"num_heads": heads, "mlp_ratio": float(cfg.model.mlp_ratio), "img_size": img_size}}
    clip = float(cfg.optim.clip_grad) if cfg.optim.clip_grad else None
    schedule = Schedule(epochs=int(cfg.optim.epochs), warmup_epochs=float(cfg.optim.warmup_epochs), lr=lr,
                        min_lr=float(cfg.optim.min_lr), accum_iter=int(cfg.optim.accum_iter), clip_grad=clip,
                        max_steps=cfg.runtime.max_steps, amp=cfg.runtime.amp)
    return fit(model, optimizer, nn.CrossEntropyLoss(), tl, sampler, vl, info, ctx.folder, schedule, saved,
               tag="attentive", set_mode=probe_mode)


__all__ = ["AttentiveClassifier", "AttentivePooler", "CosineDecayAdamW", "CrossAttention", "run"]
