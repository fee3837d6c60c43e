"""How many decoded, augmented pre-training images per second one CPU core delivers.

    python bench/data_speed.py                          # the demo world's ImageNet copy at 256 px
    python bench/data_speed.py --data /path/to/imagenet # real ImageNet (<root>/train/<wnid>/*.JPEG)
    python bench/data_speed.py --workers 0,2,8 --gpu-decode

For each DataLoader worker count it runs the pre-training pipeline (the engine's: ``SafeImageFolder``
+ PIL decode + RandomResizedCrop(224, scale=(0.2, 1), bicubic) + flip + ToTensor + Normalize) and
reports wall images/s and **images per CPU-second**: the CPU time of the workers (read from
``/proc/<pid>/stat``) and of the main process, so the per-core number holds on a shared or
oversubscribed machine too. ``--gpu-decode`` also runs ``maskalign.data.gpu_decode``: workers only
read file bytes; decoding, crop, resize, flip and normalisation run batched on the GPU (on a CPU-only
machine the same code decodes on the CPU, which measures its CPU cost). A breakdown per image
(decode / crop+resize+flip / to-tensor+normalise) shows where the CPU time goes.

With ``--target-ips`` (e.g. the ``images_per_s`` of ``bench/pretrain_speed.py`` on the GPU) it prints
how many cores each path needs to keep the step fed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch
from torch.utils.data import DataLoader

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK
    except (OSError, IndexError, ValueError):
        return 0.0


def _workers_cpu(it: Any) -> float:
    procs = getattr(it, "_workers", []) or []
    return sum(_proc_cpu_seconds(p.pid) for p in procs if p.pid is not None)


def _dataset_root(args: argparse.Namespace) -> Path:
    if args.data:
        root = Path(args.data)
        return root / "train" if (root / "train").is_dir() else root
    from maskalign.data.demo_world import ensure_imagenet

    demo = Path(args.demo_root) if args.demo_root else REPO / "output" / "bench_data" / f"demo_{args.image_size}"
    t = time.perf_counter()
    root = ensure_imagenet(demo, image_size=args.image_size, train_per_class=args.per_class, val_per_class=1)
    dt = time.perf_counter() - t
    if dt > 1:
        print(f"[data] built the demo ImageNet copy at {args.image_size} px in {dt:.0f}s: {root}", flush=True)
    return root / "train"


def measure_loader(loader: DataLoader, batches: int, warmup: int, on_batch=None) -> dict[str, float]:
    """Wall images/s and images per CPU-second (workers + main process) over ``batches`` batches."""
    it = iter(loader)
    n_img = 0
    for _ in range(warmup):  # worker start-up, first file reads
        x = next(it)
        if on_batch is not None:
            on_batch(x)
    cpu0 = _workers_cpu(it) + time.process_time()
    t0 = time.perf_counter()
    for _ in range(batches):
        x = next(it)
        if on_batch is not None:
            x = on_batch(x)
        n_img += len(x[1])  # (images, labels)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    cpu = _workers_cpu(it) + time.process_time() - cpu0
    del it
    return {"images": n_img, "wall_s": wall, "cpu_s": cpu, "images_per_s": n_img / wall,
            "images_per_cpu_s": n_img / cpu if cpu > 0 else float("nan")}


def breakdown(root: Path, img_size: int, n: int) -> dict[str, float]:
    """Milliseconds of one core per image: PIL decode, crop+resize+flip, to-tensor+normalise."""
    from PIL import Image
    from torchvision import transforms as T

    from maskalign.data.imagenet import image_folder
    from maskalign.teachers.base import IMAGENET_MEAN, IMAGENET_STD

    ds = image_folder(root.parent, root.name)
    paths = [s[0] for s in ds.samples[:n]]
    geo = T.Compose([T.RandomResizedCrop(img_size, scale=(0.2, 1.0), interpolation=T.InterpolationMode.BICUBIC),
                     T.RandomHorizontalFlip()])
    fin = T.Compose([T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    torch.set_num_threads(1)
    t_dec = t_geo = t_fin = 0.0
    sizes = []
    for p in paths:
        t0 = time.process_time()
        with open(p, "rb") as f:
            im = Image.open(f)
            im.load()
            im = im.convert("RGB")
        t1 = time.process_time()
        g = geo(im)
        t2 = time.process_time()
        fin(g)
        t3 = time.process_time()
        t_dec, t_geo, t_fin = t_dec + t1 - t0, t_geo + t2 - t1, t_fin + t3 - t2
        sizes.append(im.size)
    k = 1000.0 / max(len(paths), 1)
    return {"decode_ms": t_dec * k, "crop_resize_flip_ms": t_geo * k, "to_tensor_normalize_ms": t_fin * k,
            "total_ms": (t_dec + t_geo + t_fin) * k, "images": len(paths),
            "median_w": statistics.median(s[0] for s in sizes), "median_h": statistics.median(s[1] for s in sizes)}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="an ImageNet root (train/ inside) or a class-folder tree")
    p.add_argument("--demo-root", default=None, help="where to build the demo copy "
                   "(default: output/bench_data/demo_<image-size>)")
    p.add_argument("--image-size", type=int, default=256, help="side of the demo world's stored JPEGs")
    p.add_argument("--per-class", type=int, default=64, help="demo training images per class (10 classes)")
    p.add_argument("--img-size", type=int, default=224, help="crop size fed to the model")
    p.add_argument("--workers", default="0,1,2", help="comma-separated DataLoader worker counts")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--batches", type=int, default=8, help="timed batches per setting")
    p.add_argument("--warmup", type=int, default=2, help="untimed batches first")
    p.add_argument("--gpu-decode", action="store_true", help="also measure maskalign.data.gpu_decode")
    p.add_argument("--device", default="auto", help="device of the GPU-decode path (auto: cuda if present)")
    p.add_argument("--breakdown", type=int, default=64, help="images for the per-stage breakdown (0: skip)")
    p.add_argument("--target-ips", type=float, default=None, help="images/s the training step consumes")
    p.add_argument("--out", default=None, help="write data_speed.json here (default: output/speed/data)")
    return p


def main(args: argparse.Namespace) -> dict[str, Any]:
    from maskalign.data.imagenet import image_folder
    from maskalign.data.transforms import pretrain_transform

    # One thread in the main process too, as DataLoader gives each worker: a CPU-second is then a
    # core-second of work, not of OpenMP threads spinning on a busy machine.
    torch.set_num_threads(1)
    root = _dataset_root(args)
    workers = [int(w) for w in args.workers.split(",") if w.strip()]
    print(f"[data] {root} ; crop {args.img_size}, batch {args.batch}, {args.batches} timed batches, "
          f"cores {os.cpu_count()}, load avg {os.getloadavg()[0]:.1f}", flush=True)
    rows: list[dict[str, Any]] = []

    ds = image_folder(root.parent, root.name, pretrain_transform(args.img_size, 0.2))
    need = (args.batches + args.warmup) * args.batch
    if len(ds) < need:
        print(f"[data] note: {len(ds)} images < {need} needed; the loader wraps around epochs", flush=True)
    for n in workers:
        loader = DataLoader(ds, batch_size=args.batch, shuffle=True, num_workers=n, drop_last=True,
                            persistent_workers=n > 0, prefetch_factor=4 if n > 0 else None)
        loader = _cycle(loader)
        r = measure_loader(loader, args.batches, args.warmup)
        rows.append({"path": "cpu (PIL)", "workers": n, **r})
        _print_row(rows[-1])

    if args.gpu_decode:
        from maskalign.data.gpu_decode import GpuAugment, JpegFolder, collate_bytes

        device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                              else ("cpu" if args.device == "auto" else args.device))
        raw = JpegFolder(root)
        aug = GpuAugment(args.img_size, device=device)
        # What stays on the CPU when the GPU decodes: reading files and packing the batch.
        for n in workers:
            loader = _cycle(DataLoader(raw, batch_size=args.batch, shuffle=True, num_workers=n, drop_last=True,
                                       collate_fn=collate_bytes, persistent_workers=n > 0,
                                       prefetch_factor=4 if n > 0 else None))
            r = measure_loader(loader, args.batches, args.warmup)
            rows.append({"path": "read+pack (CPU share)", "workers": n, **r})
            _print_row(rows[-1])
        for n in workers:
            loader = _cycle(DataLoader(raw, batch_size=args.batch, shuffle=True, num_workers=n, drop_last=True,
                                       collate_fn=collate_bytes, persistent_workers=n > 0,
                                       prefetch_factor=4 if n > 0 else None))
            r = measure_loader(loader, args.batches, args.warmup, on_batch=lambda b: (aug(b[0]), b[1]))
            r["decode_device"] = device.type
            rows.append({"path": f"gpu_decode ({device.type})", "workers": n, **r})
            _print_row(rows[-1])

    summary: dict[str, Any] = {"root": str(root), "img_size": args.img_size, "batch": args.batch, "rows": rows}
    if args.breakdown:
        b = breakdown(root, args.img_size, args.breakdown)
        summary["breakdown"] = b
        print(f"\n[data] one core per image (median stored size {b['median_w']:.0f}x{b['median_h']:.0f}): "
              f"decode {b['decode_ms']:.2f} ms, crop+resize+flip {b['crop_resize_flip_ms']:.2f} ms, "
              f"to-tensor+normalise {b['to_tensor_normalize_ms']:.2f} ms = {b['total_ms']:.2f} ms "
              f"-> {1000 / b['total_ms']:.0f} images/s per core", flush=True)
    if args.target_ips:
        print(f"\n[data] cores needed to feed {args.target_ips:.0f} images/s:")
        for r in rows:
            if r["images_per_cpu_s"] == r["images_per_cpu_s"]:
                print(f"  {r['path']:<22} workers {r['workers']}: {args.target_ips / r['images_per_cpu_s']:.1f}")
    out = Path(args.out) if args.out else REPO / "output" / "speed" / "data"
    out.mkdir(parents=True, exist_ok=True)
    from maskalign.atomic import atomic_write_text

    atomic_write_text(out / "data_speed.json", json.dumps(summary, indent=2) + "\n")
    print(f"\n[data] wrote {out / 'data_speed.json'}", flush=True)
    return summary


class _cycle:
    """Iterate a DataLoader forever (re-entering epochs), keeping its worker processes visible."""

    def __init__(self, loader: DataLoader) -> None:
        self.loader = loader
        self._it = None

    def __iter__(self):
        return self

    def __next__(self):
        if self._it is None:
            self._it = iter(self.loader)
        try:
            return next(self._it)
        except StopIteration:
            self._it = iter(self.loader)
            return next(self._it)

    @property
    def _workers(self):
        return getattr(self._it, "_workers", [])


def _print_row(r: dict[str, Any]) -> None:
    print(f"  {r['path']:<22} workers {r['workers']}: {r['images_per_s']:8.1f} images/s wall, "
          f"{r['images_per_cpu_s']:8.1f} images per CPU-second (= per core)", flush=True)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
