"""Throughput of the robustness sweep (images/s per benchmark) on this machine; a benchmark, not a test.

    python bench/robustness_speed.py [--arch vit_tiny_demo|vit_small|vit_base] [--img-size 64]
                                     [--c-per-class 4] [--per-class 20] [--batch 128] [--workers 2]

Builds (once) the demo world's robustness copies, fabricates a classifier of the given arch with
random weights (throughput does not depend on the weights), runs the same sweep as
``transfer/robustness.py`` and prints one row per benchmark. Demo images are 64 px; ``--img-size``
resizes them (224 gives the per-image cost of the real sets, decoding aside).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="vit_tiny_demo", help="a maskalign.models ARCHS name")
    p.add_argument("--patch-size", type=int, default=8)
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--per-class", type=int, default=20)
    p.add_argument("--c-per-class", type=int, default=4)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--demo-root", default=None, help="demo world root (default: the usual place)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from omegaconf import OmegaConf

    from maskalign.data.demo_world.shapes import WNIDS
    from maskalign.models import ARCHS
    from maskalign.tasks import job_for
    from maskalign.transfer.classifier import build_classifier, classifier_spec

    a = ARCHS[args.arch]
    arch = {"img_size": args.img_size, "patch_size": args.patch_size, "embed_dim": a.embed_dim, "depth": a.depth,
            "num_heads": a.num_heads, "mlp_ratio": a.mlp_ratio}
    with tempfile.TemporaryDirectory() as tmp:
        model = build_classifier(arch, len(WNIDS), kind="finetune", img_size=args.img_size)
        ckpt = Path(tmp) / "classifier.pth"
        torch.save({"model": model.state_dict(), "classes": list(WNIDS), "crop_pct": 1.0, "run": "bench",
                    "meta": {"arch": arch, "run": "bench"},
                    "classifier": classifier_spec(arch, len(WNIDS), "finetune", args.img_size, "avg")}, ckpt)
        job = job_for("robustness", ckpt=ckpt, overrides=[
            f"output_dir={tmp}/out", "name=bench", f"data.batch_size={args.batch}", f"data.num_workers={args.workers}",
            f"data.demo_per_class={args.per_class}", f"data.demo_c_per_class={args.c_per_class}",
            *([f"data.demo_root={args.demo_root}"] if args.demo_root else [])])
        cfg = OmegaConf.create(job.spec.resolved)
        # build the demo copies first, so their one-time cost stays out of the timing
        from maskalign.transfer.robustness import benchmark_paths

        benchmark_paths(cfg, list(cfg.benchmarks))
        t0 = time.time()
        result = job()
        wall = time.time() - t0
    bench = result["details"]["benchmarks"]
    print(f"\nrobustness sweep throughput: {args.arch}/{args.patch_size} at {args.img_size}px, batch {args.batch}, "
          f"{args.workers} workers, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, device "
          f"{'cuda' if torch.cuda.is_available() else 'cpu'}")
    print(f"{'benchmark':<12}{'images':>8}{'seconds':>10}{'images/s':>10}")
    for key, d in bench.items():
        print(f"{key:<12}{d['n']:>8}{d['seconds']:>10.1f}{d['images_per_s']:>10.1f}")
    total = sum(d["n"] for d in bench.values())
    print(f"{'total':<12}{total:>8}{wall:>10.1f}{total / wall:>10.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
