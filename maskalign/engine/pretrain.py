"""The pre-training loop shared by every objective.

One epoch = one pass over the training set with ``drop_last``; the lr follows the cosine
schedule per iteration; a checkpoint is written atomically at epoch ends (and on request of the
launcher before a preemption), holding every RNG state, so a resumed run reproduces the losses
of an uninterrupted one bit for bit on CPU with the same seed.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from maskalign.checkpoint import (CheckpointError, export_encoder, latest_checkpoint, load_file,
                                  save_training_checkpoint)
from maskalign.config import ConfigError, save_config, to_plain
from maskalign.distributed import DistInfo, all_reduce_mean, barrier, init_distributed
from maskalign.engine.optim import build_adamw, cosine_lr, param_groups, scaled_lr, set_lr
from maskalign.engine.rng import rng_state, seed_everything, set_rng_state
from maskalign.labels import backbone_label
from maskalign.objectives import Objective, build_objective
from maskalign.records import Record, checkpoint_ref, now_iso, write_record


def run_dir(cfg: Any) -> Path:
    return Path(cfg.output_dir) / "pretrain" / cfg.name


def build_train_set(cfg: Any, objective: Objective):
    from maskalign.data.imagenet import image_folder

    transform = objective.train_transform(cfg) if hasattr(objective, "train_transform") else None
    if transform is None:
        from maskalign.data.transforms import pretrain_transform

        transform = pretrain_transform(cfg.student.img_size, cfg.data.crop_scale_min)
    if cfg.data.dataset == "demo":
        from maskalign.data.demo_world import ensure_imagenet

        root = ensure_imagenet(cfg.data.root or None)
    elif cfg.data.dataset == "imagenet":
        if not cfg.data.root:
            raise ValueError("data.dataset=imagenet needs data.root (the folder holding train/ and val/)")
        root = Path(cfg.data.root)
    else:
        raise ConfigError(f"data.dataset: unknown {cfg.data.dataset!r}; use demo or imagenet")
    return image_folder(root, "train", transform)


def pretrain_meta(cfg: Any, objective: Objective, epochs_done: int) -> dict[str, Any]:
    """What transfer jobs and the tables need to know about this encoder."""
    return {
        "arch": objective.encoder.arch(),
        "method": objective.method_id if hasattr(objective, "method_id") else objective.name,
        "backbone": backbone_label(cfg.student.arch, cfg.student.patch_size),
        "supervision": objective.supervision,
        "forward_ratio": objective.forward_ratio,
        "reconstruct_ratio": objective.reconstruct_ratio,
        "pt_epochs": epochs_done,
        "paper_ref": to_plain(cfg.paper_ref) if cfg.paper_ref is not None else None,
        "run": cfg.name,
    }


def _autocast(device: torch.device, amp: str):
    if amp == "none" or (amp == "auto" and device.type != "cuda"):
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=torch.bfloat16)


class _Log:
    """``log.jsonl``: one line per finished epoch; lines past a resume point are dropped."""

    def __init__(self, path: Path, start_epoch: int, enabled: bool) -> None:
        self.path, self.enabled = path, enabled
        if enabled and path.exists():
            keep = [ln for ln in path.read_text().splitlines()
                    if ln.strip() and json.loads(ln).get("epoch", -1) < start_epoch]
            from maskalign.atomic import atomic_write_text

            atomic_write_text(path, "".join(ln + "\n" for ln in keep))

    def write(self, entry: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(entry) + "\n")


def train(cfg: Any, dist_info: DistInfo | None = None, stop_flag: Any = None) -> dict[str, Any]:
    """Run (or resume) pre-training for ``cfg``; returns a summary with paths and final loss."""
    start_time, t0 = now_iso(), time.time()
    info = dist_info or init_distributed(cfg.runtime.device)
    out = run_dir(cfg)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    seed_everything(cfg.seed + info.rank)
    if cfg.data.dataset == "imagenet" and cfg.data.root:
        # Fail on a wrong data path before a teacher is downloaded or trained.
        from maskalign.data.imagenet import check_split_dir

        check_split_dir(Path(cfg.data.root), "train")
    objective = build_objective(cfg).to(info.device)
    dataset = build_train_set(cfg, objective)
    per_proc, rem = divmod(cfg.optim.total_batch_size, info.world_size * cfg.optim.accum_iter)
    if rem or per_proc < 1:
        raise ConfigError(f"optim.total_batch_size={cfg.optim.total_batch_size} is not divisible by "
                         f"world size {info.world_size} x accum_iter {cfg.optim.accum_iter}")
    # data.decode (CPU or on-device decoding); per-image augmentation seeds (maskalign/data/keyed.py)
    from maskalign.data.decode import pretrain_loader
    loader, sampler = pretrain_loader(cfg, objective, dataset, info, per_proc,
                                      lambda: _autocast(info.device, cfg.runtime.amp))
    iters = len(loader)
    if iters == 0:
        raise ConfigError(f"the training set ({len(dataset)} images) is smaller than one batch of {per_proc}")
    lr = (scaled_lr(cfg.optim.blr, cfg.optim.total_batch_size, cfg.optim.lr_rule)
          * getattr(objective, "lr_multiplier", 1.0))
    optimizer = build_adamw(param_groups(objective, cfg.optim.weight_decay, objective.no_weight_decay()),
                            lr, tuple(cfg.optim.betas), info.device)
    model: torch.nn.Module = objective
    if cfg.runtime.compile:
        objective.encoder = torch.compile(objective.encoder)  # type: ignore[assignment]
    if info.world_size > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            objective, device_ids=[info.device.index] if info.device.type == "cuda" else None,
            find_unused_parameters=getattr(objective, "find_unused_parameters", False))

    start_epoch, step = 0, 0
    ckpt_path = latest_checkpoint(out)
    if ckpt_path is not None:
        ckpt = load_file(ckpt_path)
        own = objective.state_dict()
        wrong = [k for k, v in ckpt["model"].items() if k in own and own[k].shape != v.shape]
        if wrong:
            raise CheckpointError(f"{ckpt_path}: does not fit this config ({wrong[0]} has shape "
                                  f"{tuple(ckpt['model'][wrong[0]].shape)}, the model {tuple(own[wrong[0]].shape)})")
        missing, unexpected = objective.load_state_dict(ckpt["model"], strict=False)
        missing = [k for k in missing if not k.startswith("teacher.")]
        if missing or unexpected:
            raise CheckpointError(f"{ckpt_path}: does not fit this config (missing {missing[:4]}, "
                                  f"unexpected {unexpected[:4]})")
        optimizer.load_state_dict(ckpt["optimizer"])
        start_epoch, step = int(ckpt["epoch"]), int(ckpt["step"])
        set_rng_state(ckpt["rng"])
        if info.rank:  # the checkpoint holds rank 0's RNG streams; other ranks draw their own masks
            seed_everything(cfg.seed + info.rank + 1_000_003 * start_epoch)
        if info.is_main:
            print(f"[pretrain] resumed from {ckpt_path} at epoch {start_epoch}", flush=True)
    log = _Log(out / "log.jsonl", start_epoch, info.is_main)
    from maskalign.monitor import TrainMonitor  # TensorBoard / W&B (logging: in the config)
    mon = TrainMonitor(out, info.is_main, info.device, cfg.runtime.log_every, objective,
                       start_step=step)
    if info.is_main:
        print(f"[pretrain] {cfg.name}: {objective.name} on {len(dataset)} images, {iters} it/epoch, "
              f"batch {cfg.optim.total_batch_size} (per process {per_proc}), lr {lr:.3g}, "
              f"device {info.device}, world {info.world_size}", flush=True)

    max_steps = cfg.runtime.max_steps
    total_steps = cfg.optim.epochs * iters // cfg.optim.accum_iter
    last_loss = float("nan")
    epoch = start_epoch
    for epoch in range(start_epoch, cfg.optim.epochs):
        sampler.set_epoch(epoch)
        model.train()
        loss_sum = torch.zeros((), device=info.device)
        metric_sums: dict[str, torch.Tensor] = {}
        n_seen = 0
        t_epoch = time.time()
        bar = _progress(iters, f"epoch {epoch + 1}/{cfg.optim.epochs}", info.is_main)
        for it, (images, _) in enumerate(mon.timed(loader)):
            if it % cfg.optim.accum_iter == 0:
                set_lr(optimizer, cosine_lr(epoch + it / iters, lr, cfg.optim.min_lr,
                                            cfg.optim.warmup_epochs, cfg.optim.epochs))
            if isinstance(images, (list, tuple)):
                images = [v.to(info.device, non_blocking=True) for v in images]
            else:
                images = images.to(info.device, non_blocking=True)
            with _autocast(info.device, cfg.runtime.amp):
                result = model(images)
            (result.loss / cfg.optim.accum_iter).backward()
            if (it + 1) % cfg.optim.accum_iter == 0:
                if cfg.optim.clip_grad:
                    torch.nn.utils.clip_grad_norm_(objective.parameters(), cfg.optim.clip_grad)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                objective.after_optimizer_step(min(step / max(total_steps, 1), 1.0))
            loss_sum += result.loss.detach()
            for k, v in result.metrics.items():
                metric_sums[k] = metric_sums.get(k, torch.zeros((), device=info.device)) + v.detach().float()
            n_seen += 1
            mon.iteration(it, step, result.loss, result.metrics, optimizer.param_groups[0]["lr"],
                          per_proc * info.world_size)
            if bar is not None:
                bar.update(1)
                if (it + 1) % cfg.runtime.log_every == 0 or it + 1 == iters:
                    # The only host sync of the step, at log intervals.
                    bar.set_postfix(loss=f"{loss_sum.item() / n_seen:.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
            if max_steps is not None and step >= max_steps:
                break
        if bar is not None:
            bar.close()
        mean_loss = all_reduce_mean(loss_sum / max(n_seen, 1)).item()
        if not math.isfinite(mean_loss):
            raise FloatingPointError(f"[pretrain] loss became {mean_loss} in epoch {epoch + 1}; "
                                     f"lower optim.blr or enable optim.clip_grad")
        last_loss = mean_loss
        dt = time.time() - t_epoch
        entry = {"epoch": epoch, "loss": mean_loss, "lr": optimizer.param_groups[0]["lr"], "step": step,
                 "sec_per_iter": dt / max(n_seen, 1),
                 "images_per_s": n_seen * per_proc * info.world_size / max(dt, 1e-9),
                 **{k: all_reduce_mean(v / max(n_seen, 1)).item() for k, v in metric_sums.items()}}
        done = epoch + 1
        finished = done == cfg.optim.epochs or (max_steps is not None and step >= max_steps)
        if info.is_main:
            if done % cfg.runtime.save_every == 0 or finished:
                keep = done if cfg.runtime.keep_every and done % cfg.runtime.keep_every == 0 else None
                save_training_checkpoint(out, _state(objective, optimizer, done, step, cfg), keep)
            log.write(entry)
            mon.epoch(done, entry, step)
            print(f"[pretrain] epoch {done}/{cfg.optim.epochs} loss {mean_loss:.5f} "
                  f"({entry['images_per_s']:.1f} img/s)", flush=True)
        barrier()
        if finished or (stop_flag is not None and stop_flag()):
            break

    mon.close()
    summary: dict[str, Any] = {"out_dir": str(out), "final_loss": last_loss, "epochs_done": epoch + 1}
    if info.is_main:
        meta = pretrain_meta(cfg, objective, epoch + 1)
        enc = export_encoder(out, objective.encoder_state_dict(), meta, objective.state_dict_to_save())
        summary["encoder"] = str(enc)
        write_record(out, Record(
            run_id=f"pretrain/{cfg.name}", task="pretrain", method=meta["method"], backbone=meta["backbone"],
            supervision=meta["supervision"], forward_ratio=meta["forward_ratio"],
            reconstruct_ratio=meta["reconstruct_ratio"], pt_epochs=meta["pt_epochs"], paper_ref=meta["paper_ref"],
            metrics={"final_loss": last_loss}, checkpoint=checkpoint_ref(enc), config=to_plain(cfg),
            start_time=start_time, wall_time_s=time.time() - t0))
    barrier()
    return summary


def _state(objective: Objective, optimizer: torch.optim.Optimizer, epoch: int, step: int, cfg: Any) -> dict[str, Any]:
    return {"model": objective.state_dict_to_save(), "optimizer": optimizer.state_dict(), "epoch": epoch,
            "step": step, "config": to_plain(cfg), "rng": rng_state(),
            "meta": pretrain_meta(cfg, objective, epoch)}


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, mininterval=1.0)
