"""The pre-training loop shared by every objective.

One epoch = one pass over the training set with ``drop_last``; the lr follows the cosine
schedule per iteration; a checkpoint is written atomically at epoch ends and, when a stop signal
arrives (SLURM's requeue signal USR2, or TERM), at the next iteration boundary with the position
in the epoch. It holds every RNG state, the epoch's running sums and the log entries of the
epochs done; each sample's augmentation is seeded by (seed, epoch, index) (``maskalign.data.keyed``), so
a resumed run reproduces the losses of an uninterrupted one bit for bit on CPU with the same seed.
The run folder's own rules (one writer, a finished run left alone, no resume under another
config) are in :mod:`maskalign.runfolder.resume`.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch

from maskalign.amp import autocast
from maskalign.atomic import append_line
from maskalign.checkpoint import CheckpointError, export_encoder, latest_checkpoint, load_file, save_training_checkpoint
from maskalign.config import ConfigError, to_plain
from maskalign.data.decode import pretrain_loader
from maskalign.distributed import DistInfo, all_reduce_mean, barrier, init_distributed
from maskalign.engine.optim import build_adamw, cosine_lr, param_groups, scaled_lr, set_lr
from maskalign.engine.preflight import run_dir
from maskalign.engine.rng import rng_state, seed_everything, set_rng_state
from maskalign.errors import PathError
from maskalign.labels import backbone_label
from maskalign.metric_names import Metric
from maskalign.monitor import TrainMonitor
from maskalign.objectives import Objective, build_objective
from maskalign.records import Record, checkpoint_ref, now_iso, write_record
from maskalign.runfolder.faults import fault_at_start, fault_point, poisoned
from maskalign.runfolder.preempt import (
    Stopped,
    enter_step_loop,
    install_handler,
    leave_step_loop,
    request_stop,
    stop_now,
    stop_requested,
)
from maskalign.runfolder.resume import RunFolder, finished_summary, open_run
from maskalign.runfolder.slurm_env import current_job_id


def build_train_set(cfg: Any, objective: Objective):
    from maskalign.data.imagenet import image_folder

    transform = objective.train_transform(cfg)
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
        "method": objective.method_id,
        "backbone": backbone_label(cfg.student.arch, cfg.student.patch_size),
        "supervision": objective.supervision,
        "forward_ratio": objective.forward_ratio,
        "reconstruct_ratio": objective.reconstruct_ratio,
        "pt_epochs": epochs_done,
        "paper_ref": to_plain(cfg.paper_ref) if cfg.paper_ref is not None else None,
        "run": cfg.name,
    }




def train(cfg: Any, dist_info: DistInfo | None = None, stop_flag: Any = None) -> dict[str, Any]:
    """Run (or resume) pre-training for ``cfg``; returns a summary with paths and final loss.

    A finished run is not touched (the summary has ``already_finished``). A stop signal (see
    :mod:`maskalign.runfolder.preempt`) ends the run at the next iteration boundary with a
    mid-epoch checkpoint; ``stop_flag()`` (for tests) ends it at the next epoch end.
    """
    info = dist_info or init_distributed(cfg.runtime.device)
    out = run_dir(cfg)
    done = finished_summary(cfg, out)
    if done is not None:
        if info.is_main:
            print(f"[pretrain] {cfg.name} has finished already; nothing to do. Record: {done['record']}, "
                  f"encoder: {done['encoder']} (runtime.restart=true starts over, keeping these aside)", flush=True)
        return done
    # From here a TERM or INT ends the process at once (outside the step loop), releasing the lock.
    restore_signals = install_handler()
    try:
        run = open_run(cfg, out, info.is_main)
    except BaseException:
        restore_signals()
        raise
    try:
        return _train(cfg, info, run, stop_flag)
    except Stopped as e:  # a loop stop is reported by _stop_mid_epoch, before submitit may exit from under it
        if e.immediate:
            if info.is_main:
                print(f"[pretrain] {e.message}", file=sys.stderr, flush=True)
            run.event("stopped", signal=signal.Signals(e.signum).name, detail="outside the step loop")
        raise
    except OSError as e:  # what no writer turned into a PathError already
        err = PathError.from_os_error(e)
        run.event("failed", error=str(err))
        raise err from None
    except BaseException as e:
        if not isinstance(e, SystemExit):
            run.event("failed", error=f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}")
        raise
    finally:
        restore_signals()
        run.close()


def _train(cfg: Any, info: DistInfo, run: RunFolder, stop_flag: Any) -> dict[str, Any]:
    start_time, t0 = now_iso(), time.time()
    out = run.out
    for note in run.notes:
        print(f"[pretrain] {note}", flush=True)
    seed_everything(cfg.seed + info.rank)
    fault_at_start()  # tests only: a stop before the teacher, the data set and the loop
    if cfg.data.dataset == "imagenet" and cfg.data.root:
        # Fail on a wrong data path before a teacher is downloaded or trained.
        from maskalign.data.layout import check_split_dir

        check_split_dir(Path(cfg.data.root), "train")
    objective = build_objective(cfg).to(info.device)
    dataset = build_train_set(cfg, objective)
    per_proc, rem = divmod(cfg.optim.total_batch_size, info.world_size * cfg.optim.accum_iter)
    if rem or per_proc < 1:
        raise ConfigError(f"optim.total_batch_size={cfg.optim.total_batch_size} is not divisible by "
                         f"world size {info.world_size} x accum_iter {cfg.optim.accum_iter}")
    # data.decode (CPU or on-device decoding); each image's augmentation is seeded by (seed, epoch,
    # index) (maskalign/data/keyed.py), so batches do not depend on workers, world size or a resume.
    loader, sampler = pretrain_loader(cfg, objective, dataset, info, per_proc,
                                      lambda: autocast(info.device, cfg.runtime.amp))
    iters = len(loader)
    if iters == 0:
        raise ConfigError(f"the training set ({len(dataset)} images) is smaller than one batch of {per_proc}")
    lr = scaled_lr(cfg.optim.blr, cfg.optim.total_batch_size, cfg.optim.lr_rule) * objective.lr_multiplier
    optimizer = build_adamw(param_groups(objective, cfg.optim.weight_decay, objective.no_weight_decay()),
                            lr, tuple(cfg.optim.betas), info.device)
    model: torch.nn.Module = objective
    if cfg.runtime.compile:
        objective.encoder = torch.compile(objective.encoder)  # type: ignore[assignment]
    if info.world_size > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            objective, device_ids=[info.device.index] if info.device.type == "cuda" else None,
            find_unused_parameters=objective.find_unused_parameters)

    barrier()  # the main process has checked the folder (and set old outputs aside on a restart)
    start_epoch, start_iter, step = 0, 0, 0
    history: list[dict[str, Any]] = []
    accum: dict[str, Any] = {}
    ckpt_path = run.ckpt_path if info.is_main else latest_checkpoint(out)
    if ckpt_path is not None:
        ckpt = run.ckpt if run.ckpt is not None else load_file(ckpt_path)
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
        start_iter = int(ckpt.get("iter_in_epoch", 0))
        history = list(ckpt.get("history") or [])
        accum = _own_accum(dict(ckpt.get("accum") or {}), info)
        set_rng_state(ckpt["rng"])
        run.ckpt = None  # the optimizer holds its own copy now
        if info.rank:  # the checkpoint holds rank 0's RNG streams; other ranks draw their own masks
            seed_everything(cfg.seed + info.rank + 1_000_003 * start_epoch)
        if info.is_main:
            where = f"epoch {start_epoch}" + (f", iteration {start_iter}/{iters}" if start_iter else "")
            print(f"[pretrain] resumed from {ckpt_path} at {where}", flush=True)
    run.log_history(history)
    mon = TrainMonitor(out, info.is_main, info.device, cfg.runtime.log_every, objective, start_step=step)
    if info.is_main:
        print(f"[pretrain] {cfg.name}: {objective.name} on {len(dataset)} images, {iters} it/epoch, "
              f"batch {cfg.optim.total_batch_size} (per process {per_proc}), lr {lr:.3g}, "
              f"device {info.device}, world {info.world_size}", flush=True)

    max_steps = cfg.runtime.max_steps
    total_iters = cfg.optim.epochs * iters
    last_loss = history[-1]["loss"] if history else float("nan")
    epochs_done = start_epoch
    enter_step_loop()  # a TERM or INT now only asks for a checkpoint at the next iteration boundary
    for epoch in range(start_epoch, cfg.optim.epochs):
        skip = start_iter if epoch == start_epoch else 0
        sampler.set_epoch(epoch, skip * per_proc)
        model.train()
        loss_sum = (accum.get("loss_sum", torch.zeros(())).to(info.device) if skip
                    else torch.zeros((), device=info.device))
        metric_sums: dict[str, torch.Tensor] = {k: v.to(info.device) for k, v in accum.get("metric_sums", {}).items()} \
            if skip else {}
        n_seen = int(accum.get("n_seen", 0)) if skip else 0
        t_epoch = time.time()
        bar = _progress(iters, f"epoch {epoch + 1}/{cfg.optim.epochs}", info.is_main)
        if bar is not None and skip:
            bar.update(skip)
        for it, (images, _) in enumerate(mon.timed(loader), start=skip):
            if it % cfg.optim.accum_iter == 0:
                set_lr(optimizer, cosine_lr(epoch + it / iters, lr, cfg.optim.min_lr,
                                            cfg.optim.warmup_epochs, cfg.optim.epochs))
            if isinstance(images, (list, tuple)):
                images = [v.to(info.device, non_blocking=True) for v in images]
            else:
                images = images.to(info.device, non_blocking=True)
            with autocast(info.device, cfg.runtime.amp):
                result = model(images)
            if poisoned(epoch, it):  # tests only: a diverging step
                result.loss = result.loss * float("nan")
            # Every step, before anything is updated: the first non-finite loss ends the run with
            # the last checkpoint as it is (one host sync; the loss is read for the log anyway).
            _check_loss(result.loss, info, step, epoch, it, iters, out, bar)
            (result.loss / cfg.optim.accum_iter).backward()
            boundary = (it + 1) % cfg.optim.accum_iter == 0
            if boundary:
                if cfg.optim.clip_grad:
                    torch.nn.utils.clip_grad_norm_(objective.parameters(), cfg.optim.clip_grad)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                # LUT's EMA schedule is indexed by the data iteration of this step (naver-ai/lut).
                objective.after_optimizer_step((epoch * iters + it) / total_iters)
                step += 1
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
            fault_point(epoch, it + 1)  # tests only: a named step at which a stop arrives (on a named rank)
            if boundary and it + 1 < iters and _stop_agreed(info):
                if bar is not None:
                    bar.close()
                _stop_mid_epoch(run, info, _state(objective, optimizer, epoch, step, cfg, history, it + 1,
                                                  _accum_of_all_ranks(loss_sum, metric_sums, n_seen, info)),
                                epoch, it + 1, iters, objective, optimizer)
        if bar is not None:
            bar.close()
        mean_loss = all_reduce_mean(loss_sum / max(n_seen, 1)).item()
        if not math.isfinite(mean_loss):
            raise FloatingPointError(f"[pretrain] loss became {mean_loss} in epoch {epoch + 1}; "
                                     f"lower optim.blr or enable optim.clip_grad")
        last_loss = mean_loss
        dt = time.time() - t_epoch
        entry = {"epoch": epoch, "loss": mean_loss, "lr": optimizer.param_groups[0]["lr"], "step": step,
                 "sec_per_iter": dt / max(n_seen - skip, 1),
                 "images_per_s": (n_seen - skip) * per_proc * info.world_size / max(dt, 1e-9),
                 **{k: all_reduce_mean(v / max(n_seen, 1)).item() for k, v in metric_sums.items()}}
        history.append(entry)
        done = epoch + 1
        epochs_done = done
        finished = done == cfg.optim.epochs or (max_steps is not None and step >= max_steps)
        if done % cfg.runtime.save_every == 0 or finished:
            _check_finite(objective, optimizer, info, out / "checkpoint.pth")
        if info.is_main:
            if done % cfg.runtime.save_every == 0 or finished:
                keep = done if cfg.runtime.keep_every and done % cfg.runtime.keep_every == 0 else None
                save_training_checkpoint(out, _state(objective, optimizer, done, step, cfg, history), keep)
            mon.epoch(done, entry, step)
            # After the checkpoint: a crash in between leaves a checkpoint whose history has this
            # line, and the next start rewrites log.jsonl from that history. (Last of the epoch's
            # writes: a stop requested once the line is there lands in the next epoch.)
            append_line(out / "log.jsonl", json.dumps(entry))
            print(f"[pretrain] epoch {done}/{cfg.optim.epochs} loss {mean_loss:.5f} "
                  f"({entry['images_per_s']:.1f} img/s)", flush=True)
        barrier()
        if finished or (stop_flag is not None and stop_flag()):
            break
        if _stop_agreed(info):  # a signal during the epoch's last iteration: stop at its end
            saved = done % cfg.runtime.save_every == 0
            _stop_mid_epoch(run, info, None if saved else _state(objective, optimizer, done, step, cfg, history),
                            done, 0, iters, objective, optimizer)

    leave_step_loop()
    mon.close()
    summary: dict[str, Any] = {"out_dir": str(out), "final_loss": last_loss, "epochs_done": epochs_done}
    if info.is_main:
        meta = pretrain_meta(cfg, objective, epochs_done)
        enc = export_encoder(out, objective.encoder_state_dict(), meta, objective.state_dict_to_save())
        summary["encoder"] = str(enc)
        write_record(out, Record(
            run_id=f"pretrain/{cfg.name}", task="pretrain", method=meta["method"], backbone=meta["backbone"],
            supervision=meta["supervision"], forward_ratio=meta["forward_ratio"],
            reconstruct_ratio=meta["reconstruct_ratio"], pt_epochs=meta["pt_epochs"], paper_ref=meta["paper_ref"],
            metrics={str(Metric.FINAL_LOSS): last_loss}, checkpoint=checkpoint_ref(enc), config=to_plain(cfg),
            start_time=start_time, wall_time_s=time.time() - t0))
        run.event("finished", epochs=epochs_done, final_loss=last_loss)
    barrier()
    return summary


def _check_loss(loss: torch.Tensor, info: DistInfo, step: int, epoch: int, it: int, iters: int, out: Path,
                bar: Any) -> None:
    """Raise (on every rank together) when any rank's loss is not finite."""
    bad = torch.tensor([0.0 if bool(torch.isfinite(loss.detach()).all()) else 1.0], device=info.device)
    if info.world_size > 1:
        torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MAX)
    if bad.item() > 0:
        if bar is not None:
            bar.close()  # the error line starts a line of its own
        value = loss.detach().float().item()
        raise FloatingPointError(f"[pretrain] loss became {value} at step {step + 1} (epoch {epoch + 1}, iteration "
                                 f"{it + 1}/{iters}); nothing of this step was written, the last checkpoint in {out} "
                                 f"is kept; lower optim.blr or enable optim.clip_grad")


def _check_finite(objective: Objective, optimizer: torch.optim.Optimizer, info: DistInfo, path: Path) -> None:
    """Refuse (on every rank together) to write a checkpoint holding a non-finite weight or optimizer value."""
    tensors = [("model." + k, v) for k, v in objective.state_dict_to_save().items()]
    tensors += [(f"optimizer.state.{i}.{k}", v) for i, st in optimizer.state_dict()["state"].items()
                for k, v in st.items()]
    bad = next((k for k, t in tensors if isinstance(t, torch.Tensor) and t.is_floating_point()
                and not bool(torch.isfinite(t).all())), None)
    flag = torch.tensor([0.0 if bad is None else 1.0], device=info.device)
    if info.world_size > 1:
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    if flag.item() > 0:
        raise FloatingPointError(f"[pretrain] {bad or 'a weight on another rank'} is not finite; {path} not written "
                                 f"(the last checkpoint is kept); lower optim.blr or enable optim.clip_grad")


def _accum_of_all_ranks(loss_sum: torch.Tensor, metric_sums: dict[str, torch.Tensor], n_seen: int,
                        info: DistInfo) -> dict[str, Any]:
    """The epoch's running sums for a mid-epoch checkpoint: rank 0's, plus every rank's own
    (``per_rank``), so that each rank of a resume in the same world size goes on from its own sums
    and the epoch's mean loss equals the uninterrupted run's bit for bit."""
    keys = sorted(metric_sums)
    mine = torch.stack([loss_sum.detach().float(), *(metric_sums[k].detach().float() for k in keys)])
    gathered = [mine]
    if info.world_size > 1:
        gathered = [torch.zeros_like(mine) for _ in range(info.world_size)]
        torch.distributed.all_gather(gathered, mine)
    per_rank = [{"loss_sum": g[0].to(loss_sum.dtype).cpu(),
                 "metric_sums": {k: g[1 + i].cpu() for i, k in enumerate(keys)}} for g in gathered]
    return {"loss_sum": loss_sum.cpu(), "n_seen": n_seen, "metric_sums": {k: v.cpu() for k, v in metric_sums.items()},
            "per_rank": per_rank}


def _own_accum(accum: dict[str, Any], info: DistInfo) -> dict[str, Any]:
    """This rank's running sums from a checkpoint's (rank 0's when the world size changed)."""
    per_rank = accum.pop("per_rank", None)
    if isinstance(per_rank, list) and len(per_rank) == info.world_size:
        accum.update(per_rank[info.rank])
    return accum


def _stop_agreed(info: DistInfo) -> bool:
    """Whether a stop was requested in any process (all processes must stop at the same iteration)."""
    flag = stop_requested() is not None
    if info.world_size == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    if t.item() > 0 and not flag:
        request_stop()
    return t.item() > 0


def _stop_mid_epoch(run: RunFolder, info: DistInfo, state: dict[str, Any] | None, epoch: int, it: int,
                    iters: int, objective: Objective, optimizer: torch.optim.Optimizer) -> None:
    """Write the stop checkpoint (``state=None``: the epoch-end one is already written), then leave."""
    if state is not None:
        _check_finite(objective, optimizer, info, run.out / "checkpoint.pth")
    if info.is_main and state is not None:
        save_training_checkpoint(run.out, state)
    barrier()
    where = f"epoch {epoch + 1}, iteration {it}/{iters}" if it else f"the end of epoch {epoch}"
    sig = stop_requested()
    name = signal.Signals(sig).name if sig else "a stop request"
    message = (f"stopped by {name} at {where}; checkpoint written to {run.out / 'checkpoint.pth'} "
               f"(the same command resumes there)")
    run.event("stopped", signal=name, detail=f"at {where}")
    if info.is_main:
        print(f"[pretrain] {message}", flush=True)
    stop_now(message)


def _state(objective: Objective, optimizer: torch.optim.Optimizer, epoch: int, step: int, cfg: Any,
           history: list[dict[str, Any]], iter_in_epoch: int = 0,
           accum: dict[str, Any] | None = None) -> dict[str, Any]:
    """A resumable checkpoint: ``epoch`` epochs done plus ``iter_in_epoch`` iterations of the next,
    with that epoch's running sums (``accum``) and every finished epoch's log entry (``history``)."""
    return {"model": objective.state_dict_to_save(), "optimizer": optimizer.state_dict(), "epoch": epoch,
            "step": step, "config": to_plain(cfg), "rng": rng_state(),
            "meta": pretrain_meta(cfg, objective, epoch), "iter_in_epoch": iter_in_epoch, "accum": accum or {},
            "history": history, "owner_job": current_job_id()}


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, mininterval=1.0)
