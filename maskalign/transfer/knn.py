"""Weighted k-NN classification on frozen features: DINO's protocol (``eval_knn.py``), made cheap to repeat.

* Feature: the [CLS] token after the final norm (registers unused), or the family's pooled feature
  where it has no [CLS] (:func:`maskalign.transfer.features.pooled`), L2-normalised; train and
  val images both through the eval transform (Resize / CenterCrop), no augmentation.
* Similarity: the dot product of the normalised features (cosine).
* Vote: the k nearest train images' labels, each weighted by ``exp(sim / T)`` (T = 0.07), summed
  per class; the classes ranked by that sum give top-1 and top-5. Ties go to the lower index --
  between classes, the lower class; between equally similar train images, the one earlier in the
  train set -- so a result depends neither on the device nor on the chunking.
* Every k (10, 20, 100, 200) comes from one similarity pass: the top max-k neighbours of each
  query are found once, sorted, and each k reads their first k (DINOv2 does the same).
* The similarity is computed in blocks of ``query_chunk`` queries (and, optionally,
  ``bank_chunk`` train rows, merging the per-block top-k), so ImageNet-1K's 1.28 M x 768 bank
  stays on one GPU without the full query x bank matrix.
* The train and val features are cached in the run folder (``features/``): a re-run, or a run
  with other k or T, costs no encoder forward.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from maskalign.atomic import atomic_write_text
from maskalign.config import ConfigError
from maskalign.engine.rng import seed_everything
from maskalign.tasks.context import RunContext
from maskalign.transfer.data import classification_sets, crop_pct_for, encoder_preprocess, eval_loader
from maskalign.transfer.features import FeatureCache, cache_key, extract, frozen_encoder

TEMPERATURE = 0.07
KS = (10, 20, 100, 200)
#: The k the record's headline ``top1``/``top5`` report ("20 usually works best", DINO).
HEADLINE_K = 20


def knn_metric(k: int, which: str = "top1") -> str:
    """The record metric of one k: ``knn20_top1``."""
    return f"knn{int(k)}_{which}"


def vote(sims: torch.Tensor, neighbour_labels: torch.Tensor, num_classes: int,
         temperature: float = TEMPERATURE) -> torch.Tensor:
    """Class scores (Q, C): for each query, sum over its neighbours of ``exp(sim / T)`` into their class."""
    weights = (sims / temperature).exp()
    scores = torch.zeros(sims.shape[0], num_classes, dtype=weights.dtype, device=sims.device)
    return scores.scatter_add_(1, neighbour_labels, weights)


def ranked_classes(scores: torch.Tensor, n: int = 5) -> torch.Tensor:
    """The ``n`` best classes per row; ties to the lower class index."""
    return scores.sort(dim=1, descending=True, stable=True).indices[:, : min(n, scores.shape[1])]


def _top(sims: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``topk`` with ties broken by the lower bank index, also at the k-th place (exact for every k <= k)."""
    vals, idx = sims.topk(k, dim=1)
    order = idx.argsort(dim=1)
    vals, idx = vals.gather(1, order), idx.gather(1, order)
    order = vals.argsort(dim=1, descending=True, stable=True)
    vals, idx = vals.gather(1, order), idx.gather(1, order)
    crowded = (sims >= vals[:, -1:]).sum(dim=1) > k  # more images tie at the k-th place than fit: rare
    if bool(crowded.any()):
        rows = crowded.nonzero().squeeze(1)
        s, i = sims[rows].sort(dim=1, descending=True, stable=True)
        vals[rows], idx[rows] = s[:, :k], i[:, :k]
    return vals, idx


def nearest(queries: torch.Tensor, bank: torch.Tensor, k: int,
            bank_chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` most similar bank rows of each query: (similarities, indices), best first; equal
    similarities in bank order."""
    k = min(k, bank.shape[0])
    if not bank_chunk or bank_chunk >= bank.shape[0]:
        return _top(queries @ bank.T, k)
    best_s = best_i = None
    for start in range(0, bank.shape[0], bank_chunk):
        block = bank[start:start + bank_chunk]
        s, i = _top(queries @ block.T, min(k, block.shape[0]))
        i = i + start
        if best_s is not None:  # earlier blocks first: a stable sort keeps the lower index ahead on a tie
            s, i = torch.cat([best_s, s], 1), torch.cat([best_i, i], 1)  # type: ignore[list-item]
            s, pos = s.sort(dim=1, descending=True, stable=True)
            s, i = s[:, :k], i.gather(1, pos[:, :k])
        best_s, best_i = s, i
    return best_s, best_i  # type: ignore[return-value]


def knn_predictions(train_features: torch.Tensor, train_labels: torch.Tensor, queries: torch.Tensor,
                    num_classes: int, ks: Sequence[int] = KS, temperature: float = TEMPERATURE,
                    query_chunk: int = 1024, bank_chunk: int | None = None, top: int = 5) -> dict[int, torch.Tensor]:
    """For each k, the ``top`` predicted classes (Q, top) of each query; one similarity pass for all k.

    Features are L2-normalised here (cosine similarity); ``train_labels`` are class indices.
    """
    if not ks or min(ks) < 1:
        raise ConfigError(f"knn.ks: {list(ks)}: give one or more k >= 1")
    bank = F.normalize(train_features.float(), dim=1)
    labels = train_labels.long().to(bank.device)
    max_k = min(max(ks), bank.shape[0])
    out: dict[int, list[torch.Tensor]] = {int(k): [] for k in ks}
    for start in range(0, queries.shape[0], max(int(query_chunk), 1)):
        q = F.normalize(queries[start:start + query_chunk].float().to(bank.device), dim=1)
        sims, idx = nearest(q, bank, max_k, bank_chunk)
        nbr = labels[idx]
        for k in out:
            out[k].append(ranked_classes(vote(sims[:, :k], nbr[:, :k], num_classes, temperature), top))
    return {k: torch.cat(v) if v else torch.zeros(0, top, dtype=torch.long) for k, v in out.items()}


def knn_accuracy(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                 test_labels: torch.Tensor, num_classes: int, ks: Sequence[int] = KS,
                 temperature: float = TEMPERATURE, query_chunk: int = 1024,
                 bank_chunk: int | None = None) -> dict[int, dict[str, float]]:
    """``{k: {"top1", "top5"}}`` in percent (top-5 counts a hit among the 5 best classes)."""
    preds = knn_predictions(train_features, train_labels, test_features, num_classes, ks, temperature,
                            query_chunk, bank_chunk)
    y = test_labels.long().to(train_features.device).view(-1, 1)
    n = max(len(y), 1)
    return {k: {"top1": 100.0 * p[:, :1].eq(y).any(1).sum().item() / n,
                "top5": 100.0 * p.eq(y).any(1).sum().item() / n} for k, p in preds.items()}


def _split_key(src: Any, split: str, dataset: Any, img_size: int, crop_pct: float, amp: str) -> str:
    files = [str(p) for p, _ in getattr(dataset, "samples", [])]
    return cache_key(source=src.ref, split=split, img_size=img_size, crop_pct=crop_pct, amp=amp,
                     preprocess=src.meta.get("preprocess"),
                     feature="pooled", files=cache_key(files=files), n=len(dataset))


def run(ctx: RunContext) -> dict[str, Any]:
    """k-NN top-1/top-5 of the context's encoder for every k in ``knn.ks`` (the job records them)."""
    from maskalign.data.transforms import eval_transform

    cfg = ctx.config
    ks = [int(k) for k in cfg.knn.ks]
    headline = int(cfg.knn.headline_k)
    if headline not in ks:
        raise ConfigError(f"knn.headline_k={headline} is not among knn.ks={ks}")
    info = ctx.dist
    seed_everything(int(cfg.seed) + info.rank)
    src = ctx.source
    img_size = int(cfg.model.img_size or src.arch["img_size"])
    prep = encoder_preprocess(src.meta)  # the encoder's own statistics, interpolation and crop
    crop_pct = crop_pct_for(cfg, prep)
    transform = eval_transform(img_size, crop_pct, prep.mean, prep.std, prep.interpolation)
    train_set, val_set, root, kind = classification_sets(cfg, img_size, transform, prep)
    model = frozen_encoder(src, img_size, info.device)
    amp = str(cfg.runtime.amp)
    bs, workers = int(cfg.data.batch_size), int(cfg.data.num_workers)
    forwards = 0
    banks = {}
    for split, dataset in (("train", train_set), ("val", val_set)):
        cache = FeatureCache(ctx.folder, _split_key(src, split, dataset, img_size, crop_pct, amp))
        (feats, labels), cached = cache.get(
            split, info.device, lambda d=dataset: extract(model, eval_loader(d, bs, info, workers), info.device, amp),
            write=bool(cfg.knn.cache) and info.is_main)
        forwards += 0 if cached else len(dataset)
        banks[split] = (feats, labels)
        if info.is_main:
            how = f"read from {cache.path(split)}" if cached else f"encoded ({len(dataset)} images)"
            print(f"[knn] {split}: {tuple(feats.shape)} features {how}", flush=True)
    num_classes = len(train_set.classes)
    result = knn_accuracy(*banks["train"], *banks["val"], num_classes, ks, float(cfg.knn.temperature),
                          int(cfg.knn.query_chunk), cfg.knn.bank_chunk and int(cfg.knn.bank_chunk))
    metrics: dict[str, float] = {"top1": result[headline]["top1"], "top5": result[headline]["top5"]}
    for k in ks:
        metrics[knn_metric(k)] = result[k]["top1"]
        metrics[knn_metric(k, "top5")] = result[k]["top5"]
    out: dict[str, Any] = {"metrics": metrics, "out_dir": str(ctx.folder), "images_encoded": forwards,
                           "per_k": {str(k): v for k, v in result.items()}}
    if info.is_main:
        print(f"[knn] {cfg.name}: {src.meta.get('label')} on {root} ({kind}), {num_classes} classes, T "
              f"{cfg.knn.temperature}: " + ", ".join(f"k={k} top-1 {result[k]['top1']:.2f}" for k in ks), flush=True)
        atomic_write_text(ctx.folder / "knn.json", json.dumps(out["per_k"], indent=2) + "\n")
    return out
