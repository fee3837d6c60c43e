"""One GPU, at most 8 minutes: is the suite ready for the cluster? Measures and writes JSON.

    python bench/gpu_check.py --out output/gpu_check            # on one GPU (H100/H200 class)
    python bench/gpu_check.py --out /tmp/gc --dry-run           # CPU, tiny sizes: the plumbing

Sections (each timed, each failure recorded in the JSON without stopping the others; a section
that would start past the time budget is skipped and says so):

* ``pretrain_step``: Table 7's step at ViT-B/16, 224 px, bf16 autocast, fused AdamW, for MaskAlign
  (under a random CLIP-B/16), FD, MAE and CrossMAE, built from their recipe files as
  ``bench/pretrain_speed.py`` builds them; seconds per iteration (CUDA events), images/s, FLOPs per
  image counted with ``torch.utils.flop_counter`` (``pretrain_speed.count_step_flops``), MFU against
  the bf16 dense peak, peak memory; FD / MaskAlign time ratio (target >= 2.0) and MaskAlign's MFU
  (target >= 45%).
* ``compile``: MaskAlign's step with the student compiled as ``runtime.compile=true`` compiles it,
  against eager; the compilation's own seconds apart.
* ``decode``: images/s of the CPU path (PIL; per core, and with the node's DataLoader workers)
  and of the GPU path (workers read bytes, nvJPEG + augmentation on the device) on synthetic
  ImageNet-sized JPEGs (about 400x350, 4:2:0) or ``--data``; cores the CPU path needs to feed the
  MaskAlign step measured above.
* ``vitdet``: ``transfer/coco_vitdet.py`` with ``mask_rcnn_vitdet_b_25ep_maskalign`` (1024 px) for 20
  iterations with AMP on a random ViT-B/16 encoder and a small synthetic COCO; detectron2's own
  per-iteration times.
* ``upernet``: ``transfer/ade20k_upernet.py`` with ``upernet_vit_b16_ade20k_512_160k`` for 20
  iterations (AmpOptimWrapper) on a small synthetic ADE20K.
* ``ddp``: a 1-GPU ``torchrun`` smoke: the pre-training engine (``pretrain/submit.py --local``,
  ``data.decode=auto``, so the auto decision is measured on CUDA) and an explicit DDP-wrapped
  MaskAlign step over NCCL (a 1-process world does not wrap the engine's model in DDP).

``--dry-run`` runs every section on CPU at demo sizes (demo student and teacher, tiny detection and
segmentation configs, 2 iterations, torch.compile with the ``eager`` backend): it checks the script,
not the hardware. Writes ``<out>/gpu_check.json`` (atomically) and prints a summary.

MFU's peak: NVIDIA's H100 SXM5 / H200 datasheets give 1,979 TFLOP/s bf16 Tensor Core *with 2:4
sparsity*; dense is half, 989.4 (H100 PCIe: 756). Training uses dense math.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # random teachers: never reach for a hub

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

import pretrain_speed as ps

from maskalign.amp import autocast

BF16_DENSE_PEAK_TFLOPS = {"H200": 989.4, "H100 PCIE": 756.0, "H100": 989.4}  # module docstring
BUDGET_S = 480.0
TABLE7 = ("maskalign", "fd", "mae", "crossmae")


def peak_tflops(device: torch.device) -> tuple[float | None, str]:
    """The bf16 dense peak of this GPU and where it comes from (CPU: its measured fp32 matmul rate)."""
    if device.type != "cuda":
        return ps.calibrate_cpu_tflops(ps.Clock("wall"), bf16=False, n=512), "measured fp32 matmul (CPU)"
    name = torch.cuda.get_device_name(device).upper()
    for key, tf in BF16_DENSE_PEAK_TFLOPS.items():
        if key in name:
            return tf, f"NVIDIA datasheet, {key} bf16 dense"
    return ps.default_peak_tflops(device), "bench/pretrain_speed.py table"


class Ctx(SimpleNamespace):
    """What the sections share: device, sizes, output folder, results so far."""


def make_ctx(args: argparse.Namespace) -> Ctx:
    cuda = torch.cuda.is_available() and not args.dry_run
    device = torch.device("cuda" if cuda else "cpu")
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    tiny = args.dry_run
    if tiny:
        torch.set_num_threads(1)  # a shared CPU: spinning OpenMP threads only slow each other down
    return Ctx(
        device=device, dry=tiny, out=Path(args.out), work=Path(args.out) / "work",
        amp="bf16" if cuda else "none",
        batch=args.batch or (2 if tiny else 128), iters=args.iters or (1 if tiny else 10), warmup=1 if tiny else 3,
        base_ov=(["student.arch=vit_tiny_demo", "student.img_size=64", "student.patch_size=8"] if tiny else
                 ["student.arch=vit_base", "student.img_size=224", "student.patch_size=16"])
                + ["runtime.compile=false"],
        teacher_ov=(["teacher.backend=demo"] if tiny else
                    ["teacher.backend=open_clip", "teacher.name=ViT-B-16", "teacher.label=CLIP-B/16",
                     "teacher.pretrained=null", "teacher.input_size=null"]),
        # Dry run: the pixel decoders shrunk (their ViT-B sizes cost minutes per step on 2 cores).
        extra_ov=[f"{m}.{k}={v}" for m in ("mae", "crossmae") for k, v in
                  (("decoder_dim", 32), ("decoder_depth", 1), ("decoder_heads", 2))] if tiny else [],
        img=64 if tiny else 224, det_iters=2 if tiny else 20, results={})


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _build(ctx: Ctx, key: str) -> SimpleNamespace:
    from maskalign.engine.optim import build_adamw, param_groups

    spec = next(m for m in ps.METHODS if m.key == key)
    obj, _ = ps.build_one(spec, list(ctx.base_ov), list(ctx.teacher_ov), list(ctx.extra_ov))
    obj = obj.to(ctx.device).train()
    opt = build_adamw(param_groups(obj, 0.05, obj.no_weight_decay()), 1e-4, (0.9, 0.95), ctx.device)
    images = torch.randn(ctx.batch, 3, ctx.img, ctx.img, device=ctx.device)
    teacher = ps.find_teacher(obj)
    return SimpleNamespace(spec=spec, obj=obj, opt=opt, images=images, steps=0,
                           teacher_attr=teacher[0] if teacher else None)


def _time_steps(ctx: Ctx, e: SimpleNamespace) -> float:
    """Seconds per step after warm-up: CUDA events on a GPU (one sync per block), else wall."""
    for _ in range(ctx.warmup):
        ps.train_step(e, ctx.device, ctx.amp)
    _sync(ctx.device)
    if ctx.device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(ctx.iters):
            ps.train_step(e, ctx.device, ctx.amp)
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0 / ctx.iters
    t0 = time.perf_counter()
    for _ in range(ctx.iters):
        ps.train_step(e, ctx.device, ctx.amp)
    return (time.perf_counter() - t0) / ctx.iters


def pretrain_step(ctx: Ctx) -> dict[str, Any]:
    peak, source = peak_tflops(ctx.device)
    rows: dict[str, Any] = {}
    for key in TABLE7:
        e = _build(ctx, key)
        flops = ps.count_step_flops(e, ctx.device, ctx.amp)
        if ctx.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(ctx.device)
        sec = _time_steps(ctx, e)
        row = {"sec_per_iter": sec, "images_per_s": ctx.batch / sec, **flops,
               "tflops_per_s": flops["flops_per_image"] * ctx.batch / sec / 1e12}
        row["mfu"] = row["tflops_per_s"] / peak if peak else None
        if ctx.device.type == "cuda":
            row["peak_mem_gb"] = torch.cuda.max_memory_allocated(ctx.device) / 2**30
        rows[key] = row
        print(f"[gpu_check] {e.spec.label}: {sec * 1000:.1f} ms/iter, {row['images_per_s']:.0f} img/s, "
              f"{flops['flops_per_image'] / 1e9:.1f} GFLOP/img, MFU {row['mfu'] or float('nan'):.1%}", flush=True)
        del e
        if ctx.device.type == "cuda":
            torch.cuda.empty_cache()
    ma, fd = rows["maskalign"], rows["fd"]
    return {"batch": ctx.batch, "img_size": ctx.img, "amp": ctx.amp, "peak_tflops": peak, "peak_source": source,
            "methods": rows, "fd_over_maskalign_time": fd["sec_per_iter"] / ma["sec_per_iter"],
            "fd_over_maskalign_flops": fd["flops_per_image"] / ma["flops_per_image"],
            "targets": {"fd_over_maskalign_time>=2.0": fd["sec_per_iter"] / ma["sec_per_iter"] >= 2.0,
                        "maskalign_mfu>=0.45": (ma["mfu"] or 0.0) >= 0.45}}


def compile_check(ctx: Ctx) -> dict[str, Any]:
    eager = _build(ctx, "maskalign")
    eager_s = _time_steps(ctx, eager)
    del eager
    comp = _build(ctx, "maskalign")
    backend = "eager" if ctx.dry else "inductor"
    comp.obj.encoder = torch.compile(comp.obj.encoder, backend=backend)  # what runtime.compile=true does
    t0 = time.perf_counter()
    ps.train_step(comp, ctx.device, ctx.amp)  # compiles
    _sync(ctx.device)
    compile_s = time.perf_counter() - t0
    comp_s = _time_steps(ctx, comp)
    return {"backend": backend, "eager_sec_per_iter": eager_s, "compiled_sec_per_iter": comp_s,
            "speedup": eager_s / comp_s, "compile_s": compile_s}


def _synthetic_jpegs(root: Path, n: int, size: tuple[int, int]) -> Path:
    """ImageNet-like files: smooth colour fields plus noise, 4:2:0, quality 90, two classes."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for i in range(n):
        d = root / f"c{i % 2}"
        d.mkdir(parents=True, exist_ok=True)
        chans = [127 + 80 * np.sin(2 * np.pi * (rng.uniform(0.5, 4) * xx / w + rng.uniform(0.5, 4) * yy / h))
                 for _ in range(3)]
        arr = (np.stack(chans, -1) + rng.normal(0, 12, (h, w, 3))).clip(0, 255).astype(np.uint8)
        Image.fromarray(arr).save(d / f"{i}.JPEG", quality=90, subsampling=2)
    return root


def decode_check(ctx: Ctx, data: str | None = None) -> dict[str, Any]:
    from maskalign.data.decode import DeviceRecipe, build_loader, cpu_images_per_s
    from maskalign.data.imagenet import SafeImageFolder
    from maskalign.data.transforms import pretrain_transform

    n, size = (16, (96, 80)) if ctx.dry else (1024, (400, 350))
    root = Path(data) if data else _synthetic_jpegs(ctx.work / "jpegs", n, size)
    ds = SafeImageFolder(root, transform=pretrain_transform(ctx.img, 0.2))
    per_core = cpu_images_per_s(ds, 1, n=8 if ctx.dry else 64)
    workers = 0 if ctx.dry else min(os.cpu_count() or 1, 16)
    batch = 4 if ctx.dry else 256
    out: dict[str, Any] = {"images": len(ds), "cpu_per_core_images_per_s": per_core, "workers": workers}
    for path in ("cpu", "gpu"):
        loader, sampler = build_loader(ds, batch, 0, 1, 0, workers, ctx.device, path, DeviceRecipe(ctx.img, 0.2))
        sampler.set_epoch(0)
        it = iter(loader)
        next(it)  # workers started, nvJPEG initialised
        _sync(ctx.device)
        t0, seen = time.perf_counter(), 0
        for x, _ in it:
            seen += len(x)
        _sync(ctx.device)
        out[f"{path}_images_per_s"] = seen / max(time.perf_counter() - t0, 1e-9)
    step = ctx.results.get("pretrain_step", {}).get("methods", {}).get("maskalign", {}).get("images_per_s")
    if step:
        out["maskalign_step_images_per_s"] = step
        out["cpu_cores_to_feed_maskalign"] = step / per_core
        out["gpu_path_feeds_maskalign"] = out["gpu_images_per_s"] >= step
    return out


def _encoder(ctx: Ctx) -> Path:
    from maskalign.checkpoint import export_encoder
    from maskalign.models import build_vit

    path = ctx.work / "encoder" / "encoder.pth"
    if path.is_file():
        return path
    torch.manual_seed(0)
    enc = build_vit("vit_tiny_demo", 64, 8) if ctx.dry else build_vit("vit_base", 224, 16)
    meta = {"arch": enc.arch(), "method": "maskalign", "backbone": "ViT-B/16", "supervision": "random",
            "forward_ratio": 0.3, "reconstruct_ratio": 0.0, "pt_epochs": 0}
    return export_encoder(ctx.work / "encoder", enc.state_dict(), meta)


def _run(cmd: list[str], timeout: float) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    if res.returncode:
        raise RuntimeError(f"{' '.join(cmd[:3])} ... exited {res.returncode}: {res.stderr.strip()[-600:]}")
    return res, time.perf_counter() - t0


def _median(xs: list[float]) -> float | None:
    xs = sorted(xs)
    return xs[len(xs) // 2] if xs else None


def vitdet_check(ctx: Ctx, timeout: float) -> dict[str, Any]:
    from maskalign.detection import Detectron2Missing, import_detectron2

    try:
        import_detectron2()
    except Detectron2Missing as e:
        return {"skipped": f"detectron2 missing ({e})"}
    from maskalign.data.demo_world import ensure_coco

    coco = ensure_coco(ctx.work / "coco", image_size=128 if ctx.dry else 640, train_images=8, val_images=2, seed=0)
    config = "mask_rcnn_vitdet_tiny_demo" if ctx.dry else "mask_rcnn_vitdet_b_25ep_maskalign"
    out = ctx.work / "runs" / "coco" / "vitdet"  # --output-dir is the output root: <root>/coco/<name>
    shutil.rmtree(out, ignore_errors=True)
    _, wall = _run([sys.executable, "transfer/coco_vitdet.py", "--local", "--ckpt", str(_encoder(ctx)),
                    "--config-file", config, "--data", str(coco), "--output-dir", str(ctx.work / "runs"),
                    "--name", "vitdet",
                    f"train.max_iter={ctx.det_iters}", "dataloader.train.total_batch_size=2",
                    f"train.amp.enabled={ctx.device.type == 'cuda'}", "train.log_period=1",
                    f"train.eval_period={10 ** 9}", f"dataloader.train.num_workers={0 if ctx.dry else 4}",
                    f"train.device={ctx.device.type}"], timeout)
    rows = [json.loads(x) for x in (out / "metrics.json").read_text().splitlines() if x.strip()]
    times = [r["time"] for r in rows if "time" in r]
    # detectron2's IterationTimer leaves the first iterations untimed: none in a 2-iteration dry run.
    return {"config": config, "iters": ctx.det_iters, "amp": ctx.device.type == "cuda", "wall_s": wall,
            "iterations_logged": max((int(r.get("iteration", -1)) for r in rows), default=-1) + 1,
            "sec_per_iter_median": _median(times[2:] or times),
            "data_time_median": _median([r["data_time"] for r in rows if "data_time" in r])}


def upernet_check(ctx: Ctx, timeout: float) -> dict[str, Any]:
    from maskalign.segmentation.mmseg_import import mmseg_available

    ok, why = mmseg_available()
    if not ok:
        return {"skipped": f"mmsegmentation not usable ({why})"}
    from maskalign.data.demo_world import ensure_ade20k

    ade = ensure_ade20k(ctx.work / "ade", image_size=128 if ctx.dry else 512, train_images=8, val_images=2, seed=0)
    config = "upernet_vit_tiny_demo_128" if ctx.dry else "upernet_vit_b16_ade20k_512_160k"
    out = ctx.work / "upernet"
    shutil.rmtree(out, ignore_errors=True)
    _, wall = _run([sys.executable, "transfer/ade20k_upernet.py", "--local", "--ckpt", str(_encoder(ctx)),
                    "--config", config, "--data", str(ade), "--output-dir", str(out), "--name", "check",
                    f"train_cfg.max_iters={ctx.det_iters}", f"train_cfg.val_interval={10 ** 9}",
                    "train_dataloader.batch_size=2", "default_hooks.logger.interval=1"], timeout)
    scalars = sorted((out / "ade20k" / "check").rglob("scalars.json"))
    rows = [json.loads(x) for p in scalars for x in p.read_text().splitlines() if x.strip()]
    times = [r["time"] for r in rows if "time" in r and "loss" in r]
    return {"config": config, "iters": ctx.det_iters, "amp": ctx.device.type == "cuda", "wall_s": wall,
            "sec_per_iter_median": _median(times[2:] or times)}


def ddp_check(ctx: Ctx, timeout: float) -> dict[str, Any]:
    torchrun = ([shutil.which("torchrun")] if shutil.which("torchrun")
                else [sys.executable, "-m", "torch.distributed.run"])
    worker_out = ctx.work / "ddp_worker.json"
    worker_out.unlink(missing_ok=True)
    _, wall_w = _run([*torchrun, "--nproc_per_node", "1", str(Path(__file__)), "--ddp-worker",
                      "--out", str(ctx.out), *(["--dry-run"] if ctx.dry else [])], timeout)
    worker = json.loads(worker_out.read_text())
    run_dir = ctx.work / "engine"
    shutil.rmtree(run_dir, ignore_errors=True)
    res, wall_e = _run([*torchrun, "--nproc_per_node", "1", "pretrain/submit.py", "--", "--local",
                        f"output_dir={run_dir}", "name=ddp", "optim.epochs=1", "runtime.max_steps=3",
                        "data.decode=auto", f"data.num_workers={0 if ctx.dry else 8}"], timeout)
    lines = (res.stdout + res.stderr).splitlines()
    decision = next((ln for ln in lines if "data.decode=auto" in ln), None)
    log = [json.loads(x) for x in (run_dir / "pretrain" / "ddp" / "log.jsonl").read_text().splitlines()]
    return {"worker": worker, "worker_wall_s": wall_w, "engine_wall_s": wall_e, "engine_loss": log[-1]["loss"],
            "engine_decode_decision": decision,
            "engine_tensorboard": bool(list((run_dir / "pretrain" / "ddp" / "tensorboard").glob("events.*")))}


def ddp_worker(args: argparse.Namespace) -> int:
    """Inside torchrun: DDP over NCCL (gloo on CPU) around the MaskAlign objective, three steps."""
    import torch.distributed as dist

    ctx = make_ctx(args)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if ctx.device.type == "cuda":
        ctx.device = torch.device("cuda", local)
        torch.cuda.set_device(ctx.device)
    backend = "nccl" if ctx.device.type == "cuda" else "gloo"
    dist.init_process_group(backend)
    e = _build(ctx, "maskalign")
    ddp = torch.nn.parallel.DistributedDataParallel(  # as the engine wraps it
        e.obj, device_ids=[local] if ctx.device.type == "cuda" else None,
        find_unused_parameters=getattr(e.obj, "find_unused_parameters", False))
    losses = []
    for _ in range(3):
        with autocast(ctx.device, ctx.amp):
            loss = ddp(e.images).loss
        loss.backward()
        e.opt.step()
        e.opt.zero_grad(set_to_none=True)
        t = loss.detach().float().clone()
        dist.all_reduce(t)
        losses.append(t.item() / dist.get_world_size())
    if dist.get_rank() == 0:
        from maskalign.atomic import atomic_write_text

        ctx.work.mkdir(parents=True, exist_ok=True)
        atomic_write_text(ctx.work / "ddp_worker.json", json.dumps(
            {"backend": backend, "world": dist.get_world_size(), "losses": losses,
             "finite": all(math.isfinite(v) for v in losses)}) + "\n")
    dist.destroy_process_group()
    return 0


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="folder for gpu_check.json (and its scratch under work/)")
    p.add_argument("--dry-run", action="store_true", help="CPU, demo sizes: check the script, not the hardware")
    p.add_argument("--sections", default="pretrain_step,compile,decode,vitdet,upernet,ddp")
    p.add_argument("--budget-s", type=float, default=None,
                   help=f"skip sections that would start after this (default {BUDGET_S:.0f}; dry run: no limit)")
    p.add_argument("--batch", type=int, default=None, help="pre-training batch (default 128; dry run 2)")
    p.add_argument("--iters", type=int, default=None, help="timed steps per method (default 10; dry run 1)")
    p.add_argument("--data", default=None, help="an ImageFolder of real JPEGs for the decode section")
    p.add_argument("--ddp-worker", action="store_true", help=argparse.SUPPRESS)
    return p


def main(args: argparse.Namespace) -> dict[str, Any]:
    ctx = make_ctx(args)
    ctx.work.mkdir(parents=True, exist_ok=True)
    if args.budget_s is None:
        args.budget_s = float("inf") if args.dry_run else BUDGET_S
    t_start = time.perf_counter()
    def left():
        return args.budget_s - (time.perf_counter() - t_start)
    sections: dict[str, Callable[[], dict[str, Any]]] = {
        "pretrain_step": lambda: pretrain_step(ctx),
        "compile": lambda: compile_check(ctx),
        "decode": lambda: decode_check(ctx, args.data),
        "vitdet": lambda: vitdet_check(ctx, max(min(left(), 1800.0), 30.0)),
        "upernet": lambda: upernet_check(ctx, max(min(left(), 1800.0), 30.0)),
        "ddp": lambda: ddp_check(ctx, max(min(left(), 1800.0), 30.0)),
    }
    wanted = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in sections]
    if unknown:
        raise SystemExit(f"error: --sections: unknown {', '.join(unknown)}; known: {', '.join(sections)}")
    device_name = torch.cuda.get_device_name(ctx.device) if ctx.device.type == "cuda" else "cpu"
    print(f"[gpu_check] {device_name}, torch {torch.__version__}, dry run {ctx.dry}, budget {args.budget_s:.0f} s",
          flush=True)
    for name in wanted:
        if left() <= 0:
            ctx.results[name] = {"skipped": f"time budget of {args.budget_s:.0f} s spent"}
            continue
        t0 = time.perf_counter()
        try:
            ctx.results[name] = sections[name]()
        except Exception as err:  # noqa: BLE001 -- one broken section must not hide the others' figures
            ctx.results[name] = {"error": f"{type(err).__name__}: {err}",
                                 "traceback": traceback.format_exc(limit=4)[-2000:]}
            print(f"[gpu_check] {name}: FAILED ({type(err).__name__}: {err})", flush=True)
        ctx.results[name]["section_s"] = time.perf_counter() - t0
        print(f"[gpu_check] {name}: done in {ctx.results[name]['section_s']:.1f} s", flush=True)
    summary = {"device": device_name, "dry_run": ctx.dry, "torch": torch.__version__,
               "total_s": time.perf_counter() - t_start, "sections": ctx.results}
    from maskalign.atomic import atomic_write_text

    atomic_write_text(ctx.out / "gpu_check.json", json.dumps(summary, indent=2, default=str) + "\n")
    print(f"[gpu_check] wrote {ctx.out / 'gpu_check.json'} ({summary['total_s']:.0f} s)", flush=True)
    return summary


if __name__ == "__main__":
    a = get_args_parser().parse_args()
    if a.ddp_worker:
        sys.exit(ddp_worker(a))
    s = main(a)
    sys.exit(1 if any("error" in r for r in s["sections"].values()) else 0)
