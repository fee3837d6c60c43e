"""What the frozen-feature protocols cost against a bare encoder forward; a benchmark, not a test.

    python bench/probe_speed.py [--model vit_small_patch16_224] [--img-size 224] [--batch 16]
                                [--rounds 5] [--threads 1] [--device cpu|cuda] [--bank 20000]

Measured in one run, rounds interleaved (each round times every variant once; the median is kept):

* ``bare``: the encoder's ``forward_features`` (no grad) -- the reference, 1.00;
* ``pooled``: the k-NN feature (:func:`maskalign.transfer.features.pooled`): must be within 10%;
* ``last 4 blocks``: what DINOv2's grid reads (:func:`~maskalign.transfer.features.block_tokens`,
  each block after the final norm): within 10% too;
* ``probe: 1 head`` / ``probe: 16 heads``: one training step of the grid probe (frozen forward,
  heads forward and backward, one SGD step) with 1 head and with 16 (4 lrs x {[CLS], [CLS] + mean
  patch} x {last block, last 4}); 16 heads must cost at most 1.3x one head;
* ``k-NN, cached``: weighted k-NN (k = 10, 20, 100, 200 in one pass) of ``--queries`` queries over a
  ``--bank`` x D bank of cached features: no encoder forward at all (reported per 1,000 queries,
  beside the forward's time per 1,000 images).

Weights are random (speed does not depend on them); batches are synthetic. On a CPU the clock is the
process CPU time at one thread, which a busy shared machine disturbs least; on CUDA, wall time after
synchronising. Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch


def _timer(device: torch.device) -> Callable[[Callable[[], object]], float]:
    def run(fn: Callable[[], object]) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            return time.perf_counter() - t0
        t0 = time.process_time()
        fn()
        return time.process_time() - t0

    return run


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vit_small_patch16_224", help="a timm ViT")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="CPU intra-op threads")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--bank", type=int, default=20000, help="cached train features for the k-NN timing")
    p.add_argument("--queries", type=int, default=2000)
    p.add_argument("--classes", type=int, default=1000)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    import timm

    from maskalign.transfer.features import block_tokens, pooled
    from maskalign.transfer.knn import knn_accuracy
    from maskalign.transfer.linear_grid import GridSGD, LinearGrid, grid_loss, make_grid

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = timm.create_model(args.model, pretrained=False, num_classes=0, img_size=args.img_size).to(device).eval()
    for q in model.parameters():
        q.requires_grad_(False)
    x = torch.randn(args.batch, 3, args.img_size, args.img_size, device=device)
    y = torch.randint(0, args.classes, (args.batch,), device=device)
    dim = int(model.embed_dim)
    grids = {1: make_grid([1e-3], [1], [False]), 16: make_grid([1e-4, 1e-3, 1e-2, 1e-1], [1, 4], [False, True])}
    heads = {n: LinearGrid(s, dim, args.classes).to(device) for n, s in grids.items()}
    opts = {n: GridSGD(g) for n, g in heads.items()}

    def probe(n: int) -> None:
        with torch.no_grad():
            tokens = block_tokens(model, x, heads[n].max_blocks)
        grid_loss(heads[n](tokens), y).backward()
        opts[n].step(1.0)
        opts[n].zero_grad()

    bank = torch.nn.functional.normalize(torch.randn(args.bank, dim, device=device), dim=1)
    bank_y = torch.randint(0, args.classes, (args.bank,), device=device)
    queries = torch.randn(args.queries, dim, device=device)
    query_y = torch.randint(0, args.classes, (args.queries,), device=device)

    variants: dict[str, Callable[[], object]] = {
        "bare": lambda: model.forward_features(x),
        "pooled": lambda: pooled(model, x),
        "last 4 blocks": lambda: block_tokens(model, x, 4),
        "probe: 1 head": lambda: probe(1),
        "probe: 16 heads": lambda: probe(16),
        "k-NN, cached": lambda: knn_accuracy(bank, bank_y, queries, query_y, args.classes),
    }
    timer = _timer(device)
    with torch.no_grad():
        for name, fn in variants.items():  # warm-up
            if name.startswith("probe"):
                with torch.enable_grad():
                    fn()
            else:
                fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.rounds):
        for name, fn in variants.items():
            if name.startswith("probe"):
                times[name].append(timer(fn))
            else:
                with torch.no_grad():
                    times[name].append(timer(fn))
    med = {k: statistics.median(v) for k, v in times.items()}
    bare = med["bare"]
    per_1k_forward = bare / args.batch * 1000
    per_1k_knn = med["k-NN, cached"] / args.queries * 1000
    ratios = {"pooled / bare": med["pooled"] / bare, "last 4 blocks / bare": med["last 4 blocks"] / bare,
              "16 heads / 1 head": med["probe: 16 heads"] / med["probe: 1 head"],
              "k-NN per 1k queries / forward per 1k images": per_1k_knn / per_1k_forward}
    where = f"{device.type}" + ("" if device.type == "cuda" else f", {args.threads} thread(s), CPU time")
    print(f"{args.model} at {args.img_size}px, batch {args.batch}, {args.rounds} rounds ({where}); "
          f"k-NN: {args.queries} queries x {args.bank} bank, D {dim}, {args.classes} classes")
    for k, v in med.items():
        print(f"  {k:<18} {v * 1000:9.1f} ms")
    for k, v in ratios.items():
        print(f"  {k:<45} {v:6.3f}")
    print(json.dumps({"model": args.model, "img_size": args.img_size, "batch": args.batch, "device": str(device),
                      "threads": args.threads, "median_s": med, "ratios": ratios}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
