"""DINOv2's linear evaluation (``dinov2/eval/linear.py``): one frozen forward feeds a grid of linear heads.

The protocol ``linprobe`` runs under ``protocol: dinov2`` (``--config dinov2_grid``), beside MAE's
BN + LARS probe (the paper's, still the default):

* every training batch goes once through the frozen encoder (RandomResizedCrop + flip); the last
  4 blocks' outputs, each after the final norm, feed every head;
* the grid: learning rates x {[CLS], [CLS] + mean of the last block's patch tokens} x {last
  block, last 4 blocks' [CLS] concatenated}; a head is ``Linear`` (weight N(0, 0.01), bias 0, no
  BatchNorm) on float32 features; the heads' losses are summed; SGD momentum 0.9, weight decay 0,
  each head its own lr (``lr * batch / 256``), cosine to 0 over all iterations, no warm-up;
* heads that read the same input are one batched matmul, and one SGD step updates every head's
  stacked tensors at once (:class:`GridSGD`) -- what makes 52 heads cost about one;
* selection: the head with the best top-1 on a held-out part of train (``grid.holdout_fraction``,
  seeded, eval transform) is reported on val; the record names it. DINOv2 itself picks the best
  head on val, the split it reports; that number is recorded too (``val_selected_top1``), labelled
  as such, so the two can be compared.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from maskalign.amp import autocast
from maskalign.atomic import append_line, atomic_torch_save, atomic_write_text
from maskalign.checkpoint import CheckpointError, load_file
from maskalign.config import ConfigError
from maskalign.distributed import all_reduce_mean, barrier
from maskalign.engine.optim import cosine_lr
from maskalign.engine.rng import rng_state, seed_everything, set_rng_state
from maskalign.tasks.context import RunContext
from maskalign.transfer.accuracy import all_reduce_sum
from maskalign.transfer.features import BlockTokens, block_tokens, frozen_encoder

#: DINOv2's learning rates (before the batch/256 scaling).
DINOV2_LRS = (1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1)
HEAD_STD = 0.01
LAST = "checkpoint.pth"


@dataclass(frozen=True)
class HeadSetting:
    """One head of the grid: how many last blocks' [CLS] it reads, whether it adds the mean patch token, its lr."""

    n_blocks: int
    avgpool: bool
    lr: float

    @property
    def name(self) -> str:
        return f"blocks{self.n_blocks}_{'cls+avgpool' if self.avgpool else 'cls'}_lr{self.lr:g}"

    @property
    def inputs(self) -> tuple[int, bool]:
        return self.n_blocks, self.avgpool


def make_grid(lrs: Sequence[float], n_blocks: Sequence[int] = (1, 4),
              avgpool: Sequence[bool] = (False, True)) -> list[HeadSetting]:
    """Every combination, in DINOv2's order (blocks, then pooling, then lr)."""
    if not lrs or not n_blocks or not avgpool:
        raise ConfigError("grid: lrs, n_last_blocks and avgpool each need at least one value")
    if min(n_blocks) < 1:
        raise ConfigError(f"grid.n_last_blocks: {list(n_blocks)}: each must be >= 1")
    return [HeadSetting(int(n), bool(a), float(lr)) for n in n_blocks for a in avgpool for lr in lrs]


def head_input(tokens: Sequence[BlockTokens], n_blocks: int, avgpool: bool) -> torch.Tensor:
    """DINOv2's ``create_linear_input``: the last ``n_blocks`` [CLS] concatenated, then (avgpool) the mean
    patch token of the last block; float32."""
    x = torch.cat([t.cls for t in tokens[-n_blocks:]], dim=-1)
    if avgpool:
        x = torch.cat([x, tokens[-1].patches.mean(dim=1)], dim=-1)
    return x.float()


def input_dim(dim: int, n_blocks: int, avgpool: bool) -> int:
    return dim * (n_blocks + int(avgpool))


def init_head(in_features: int, num_classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One head's initial (weight (C, in), bias (C,)): N(0, 0.01) from its own seed, bias 0."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.randn(num_classes, in_features, generator=g) * HEAD_STD, torch.zeros(num_classes)


class LinearGrid(nn.Module):
    """Every head of a grid; the heads that read one input are stacked and run as one batched matmul.

    Head ``i`` (grid order) starts from :func:`init_head` with seed ``seed + i``. ``forward`` takes
    the block tokens and returns the logits of every head, (H, B, C), in grid order.
    """

    def __init__(self, settings: Sequence[HeadSetting], dim: int, num_classes: int, seed: int = 0) -> None:
        super().__init__()
        self.settings = list(settings)
        self.groups: list[tuple[int, bool]] = sorted({s.inputs for s in self.settings})
        self.members: list[list[int]] = [[i for i, s in enumerate(self.settings) if s.inputs == g]
                                         for g in self.groups]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for (n, avg), members in zip(self.groups, self.members, strict=True):
            inits = [init_head(input_dim(dim, n, avg), num_classes, seed + i) for i in members]
            self.weights.append(nn.Parameter(torch.stack([w.T for w, _ in inits])))  # (H_g, in, C)
            self.biases.append(nn.Parameter(torch.stack([b for _, b in inits])))  # (H_g, C)
        order = [i for members in self.members for i in members]
        self.register_buffer("_order", torch.as_tensor([order.index(i) for i in range(len(order))]), persistent=False)

    @property
    def max_blocks(self) -> int:
        return max(n for n, _ in self.groups)

    def lr_vectors(self) -> list[torch.Tensor]:
        """Each stacked tensor's per-head lr (as ``self.weights``/``self.biases``, group by group)."""
        return [torch.tensor([self.settings[i].lr for i in m], dtype=torch.float64) for m in self.members]

    def head(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Head ``i``'s current (weight (C, in), bias (C,))."""
        for g, members in enumerate(self.members):
            if i in members:
                j = members.index(i)
                return self.weights[g][j].T.detach(), self.biases[g][j].detach()
        raise IndexError(i)

    def forward(self, tokens: Sequence[BlockTokens]) -> torch.Tensor:
        outs = []
        for (n, avg), w, b in zip(self.groups, self.weights, self.biases, strict=True):
            x = head_input(tokens, n, avg)  # (B, in)
            outs.append(torch.einsum("bi,hic->hbc", x, w) + b[:, None, :])
        return torch.cat(outs)[self._order]


class GridSGD:
    """SGD with momentum (dampening 0, no Nesterov, weight decay 0) -- ``torch.optim.SGD``'s update --
    on stacked heads, each head with its own lr: ``buf = m * buf + g`` (``buf = g`` at the first
    step); ``p -= lr_head * scale * buf``."""

    def __init__(self, grid: LinearGrid, momentum: float = 0.9) -> None:
        self.momentum = float(momentum)
        lrs = grid.lr_vectors()
        self.params = [(p, lr) for ps in (grid.weights, grid.biases) for p, lr in zip(ps, lrs, strict=True)]
        self.buffers: list[torch.Tensor | None] = [None] * len(self.params)

    @torch.no_grad()
    def step(self, scale: float) -> None:
        for k, (p, lr) in enumerate(self.params):
            if p.grad is None:
                continue
            buf = self.buffers[k]
            if buf is None:
                buf = self.buffers[k] = p.grad.detach().clone()
            else:
                buf.mul_(self.momentum).add_(p.grad)
            step = (lr * scale).to(p.dtype).to(p.device).view(-1, *([1] * (p.dim() - 1)))
            p.sub_(step * buf)

    def zero_grad(self) -> None:
        for p, _ in self.params:
            p.grad = None

    def state_dict(self) -> dict[str, Any]:
        return {"momentum": self.momentum, "buffers": [None if b is None else b.cpu() for b in self.buffers]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.buffers = [None if b is None else b.to(p.device) for b, (p, _) in zip(state["buffers"], self.params,
                                                                                    strict=True)]


def grid_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The sum over heads of each head's mean cross-entropy (DINOv2 sums the heads' losses)."""
    h, b, c = logits.shape
    return F.cross_entropy(logits.reshape(h * b, c), target.repeat(h), reduction="sum") / b


@torch.no_grad()
def grid_hits(model: nn.Module, grid: LinearGrid, loader: Any, device: torch.device, amp: str) -> torch.Tensor:
    """(H, 3): every head's top-1 hits, top-5 hits and sample count over ``loader`` (summed over processes)."""
    grid.eval()
    counts = torch.zeros(len(grid.settings), 3, dtype=torch.float64, device=device)
    for images, target in loader:
        images, target = images.to(device, non_blocking=True), target.to(device, non_blocking=True)
        with autocast(device, amp):
            tokens = block_tokens(model, images, grid.max_blocks)
        logits = grid(tokens)
        top = logits.topk(min(5, logits.shape[-1]), dim=-1).indices  # (H, B, 5)
        hit = top.eq(target.view(1, -1, 1))
        counts[:, 0] += hit[..., :1].any(-1).sum(-1).double()
        counts[:, 1] += hit.any(-1).sum(-1).double()
        counts[:, 2] += len(target)
    return all_reduce_sum(counts)


def select(settings: Sequence[HeadSetting], holdout: torch.Tensor, val: torch.Tensor) -> dict[str, Any]:
    """The head best on held-out top-1 (the first in grid order on a tie), its val numbers, and
    DINOv2's own choice (the best on val)."""
    pct = lambda c: (100.0 * c[:, 0] / c[:, 2].clamp(min=1), 100.0 * c[:, 1] / c[:, 2].clamp(min=1))  # noqa: E731
    h1, _ = pct(holdout)
    v1, v5 = pct(val)
    best = int(torch.nonzero(h1 == h1.max())[0])
    on_val = int(torch.nonzero(v1 == v1.max())[0])
    heads = [{**asdict(s), "name": s.name, "holdout_top1": h1[i].item(), "val_top1": v1[i].item(),
              "val_top5": v5[i].item()} for i, s in enumerate(settings)]
    return {"winner": heads[best], "val_selected": heads[on_val], "heads": heads}


def _split(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train indices, held-out indices): a seeded shuffle, ``fraction`` of the images held out."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"grid.holdout_fraction={fraction}: must be between 0 and 1")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed))).tolist()
    k = max(1, round(n * fraction))
    return sorted(perm[k:]), sorted(perm[:k])


def _subset(folder: Any, indices: list[int]) -> Any:
    """A copy of an ImageFolder holding only ``indices`` (keeps its transform and loader attributes)."""
    sub = copy.copy(folder)
    sub.samples = [folder.samples[i] for i in indices]
    sub.imgs = sub.samples
    sub.targets = [folder.targets[i] for i in indices]
    return sub


def _resume(out: Path, grid: LinearGrid, opt: GridSGD) -> dict[str, Any] | None:
    path = out / LAST
    if not path.is_file():
        return None
    ckpt = load_file(path)
    try:
        grid.load_state_dict(ckpt["grid"])
        opt.load_state_dict(ckpt["optimizer"])
    except (KeyError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot resume the head grid from it with this config "
                              f"({str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__}); "
                              f"use another name= or delete the folder") from None
    set_rng_state(ckpt["rng"])
    return ckpt


def run(ctx: RunContext) -> dict[str, Any]:
    """Train the grid on the context's frozen encoder; choose on held-out train; report val (resumable)."""
    from maskalign.data.imagenet import image_folder
    from maskalign.data.transforms import eval_transform
    from maskalign.transfer.data import (
        classification_sets,
        crop_pct_for,
        encoder_preprocess,
        eval_loader,
        linprobe_train_transform,
        train_loader,
    )
    cfg = ctx.config
    g = cfg.grid
    settings = make_grid([float(x) for x in g.lrs], [int(x) for x in g.n_last_blocks], [bool(x) for x in g.avgpool])
    info, out = ctx.dist, ctx.folder
    seed_everything(int(cfg.seed) + info.rank)
    src = ctx.source
    img_size = int(cfg.model.img_size or src.arch["img_size"])
    prep = encoder_preprocess(src.meta)  # the encoder's own statistics, interpolation and crop
    train_all, val_set, root, kind = classification_sets(cfg, img_size, linprobe_train_transform(img_size, prep), prep)
    keep, held = _split(len(train_all), float(g.holdout_fraction), int(cfg.seed))
    train_set = _subset(train_all, keep)
    holdout = _subset(image_folder(root, "train", eval_transform(img_size, crop_pct_for(cfg, prep), prep.mean, prep.std,
                                                                 prep.interpolation)), held)
    num_classes = len(train_all.classes)
    model = frozen_encoder(src, img_size, info.device)
    depth = len(model.blocks)  # type: ignore[arg-type]
    if max(int(x) for x in g.n_last_blocks) > depth:
        raise ConfigError(f"grid.n_last_blocks: {list(g.n_last_blocks)} exceeds the encoder's {depth} blocks")
    total = int(cfg.optim.total_batch_size)
    per = total // info.world_size
    if per < 1 or total % info.world_size:
        raise ConfigError(f"optim.total_batch_size={total} is not divisible by world size {info.world_size}")
    scale_lr = total / 256.0
    settings = [HeadSetting(s.n_blocks, s.avgpool, s.lr * scale_lr) for s in settings]
    grid = LinearGrid(settings, int(model.embed_dim), num_classes, int(cfg.seed)).to(info.device)
    opt = GridSGD(grid, float(g.momentum))
    net: nn.Module = grid
    if info.world_size > 1:
        net = nn.parallel.DistributedDataParallel(grid, device_ids=[info.device.index]
                                                  if info.device.type == "cuda" else None)
    tl, sampler = train_loader(train_set, per, info, int(cfg.seed), int(cfg.data.num_workers))
    iters, epochs, amp = len(tl), int(cfg.optim.epochs), str(cfg.runtime.amp)
    if iters == 0:
        raise ConfigError("[linprobe] the training set is smaller than one batch; lower optim.total_batch_size")
    state = _resume(out, grid, opt)
    start, step = (int(state["epoch"]), int(state["step"])) if state else (0, 0)
    if info.is_main:
        print(f"[linprobe] {cfg.name}: DINOv2 grid of {len(settings)} linear heads on {src.path} -> {num_classes} "
              f"classes of {root} ({kind}); {len(train_set)} train / {len(holdout)} held-out / {len(val_set)} val "
              f"images at {img_size}px, batch {total}, {epochs} epochs"
              + (f"; resumed at epoch {start}" if state else ""), flush=True)
    log = out / "log.jsonl"
    if info.is_main and start == 0 and log.exists():  # a fresh start: no lines of an earlier attempt
        log.unlink()
    max_steps = cfg.runtime.max_steps
    for epoch in range(start, epochs):
        sampler.set_epoch(epoch)
        grid.train()
        loss_sum, seen = torch.zeros((), device=info.device), 0
        for it, (images, target) in enumerate(tl):
            images = images.to(info.device, non_blocking=True)
            target = target.to(info.device, non_blocking=True)
            with torch.no_grad(), autocast(info.device, amp):
                tokens = block_tokens(model, images, grid.max_blocks)
            loss = grid_loss(net(tokens), target)
            loss.backward()
            opt.step(cosine_lr(epoch + it / iters, 1.0, 0.0, 0.0, epochs))
            opt.zero_grad()
            step += 1
            loss_sum += loss.detach()
            seen += 1
            if max_steps is not None and step >= int(max_steps):
                break
        mean_loss = all_reduce_mean(loss_sum / max(seen, 1)).item() / len(settings)
        if not math.isfinite(mean_loss):
            raise FloatingPointError(f"[linprobe] a head's loss became {mean_loss} in epoch {epoch + 1}; "
                                     f"drop the largest grid.lrs")
        if info.is_main:
            atomic_torch_save({"grid": grid.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1,
                               "step": step, "rng": rng_state(), "settings": [asdict(s) for s in settings]},
                              out / LAST)
            append_line(log, json.dumps({"epoch": epoch, "mean_head_loss": mean_loss, "step": step}))
            print(f"[linprobe] epoch {epoch + 1}/{epochs} mean head loss {mean_loss:.4f}", flush=True)
        barrier()
        if max_steps is not None and step >= int(max_steps):
            break
    bs, workers = max(per, 64), int(cfg.data.num_workers)
    chosen = select(settings, grid_hits(model, grid, eval_loader(holdout, bs, info, workers), info.device, amp),
                    grid_hits(model, grid, eval_loader(val_set, bs, info, workers), info.device, amp))
    win, dino = chosen["winner"], chosen["val_selected"]
    metrics = {"top1": win["val_top1"], "top5": win["val_top5"], "holdout_top1": win["holdout_top1"],
               "val_selected_top1": dino["val_top1"]}
    result: dict[str, Any] = {"metrics": metrics, "winner": win, "val_selected": dino, "out_dir": str(out),
                              "checkpoint": str(out / LAST)}
    if info.is_main:
        atomic_write_text(out / "grid.json", json.dumps(chosen, indent=2) + "\n")
        print(f"[linprobe] winner on held-out train: {win['name']} (held-out top-1 {win['holdout_top1']:.2f}) -> "
              f"val top-1 {win['val_top1']:.2f}; DINOv2's choice on val: {dino['name']} {dino['val_top1']:.2f}",
              flush=True)
    ctx.record_config["winner"] = {k: win[k] for k in ("name", "n_blocks", "avgpool", "lr")}
    ctx.record_config["val_selected"] = {k: dino[k] for k in ("name", "val_top1")}
    return result
