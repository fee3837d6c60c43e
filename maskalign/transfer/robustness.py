"""Robustness of a fine-tuned classifier: ImageNet-A, -R, -Sketch, -V2 and -C, as in MAE's table.

The IN-1k fine-tuned model is evaluated as is, with its own eval transform (MAE README: "the
same model weights (fine-tuned in original ImageNet-1K)"):

* ImageNet-A / -R: 200-class subsets, scored on those classes' logits only (the columns come
  from the label space, :mod:`maskalign.transfer.label_space`); top-1.
* ImageNet-Sketch: wnid folders, all classes; top-1.
* ImageNet-V2 (matched frequency): folders named by class *index*, mapped with ``int(name)``; top-1.
* ImageNet-C: ``<corruption>/<severity>/<wnid>/``; per corruption the error at each severity,
  ``CE = 100 * mean error / AlexNet's``; ``mCE`` = mean CE over the 15 common corruptions. A
  missing (or incomplete) corruption is named, the others are still evaluated, and the mCE is
  then NaN, never a silently smaller average.

Data: with no path configured, the demo world's copies (built on first use); otherwise each
``data.<set>`` path as its release unpacks, and sets without a path are skipped (and said so).
Record metrics: ``in1k_top1``, ``in_a_top1``, ``in_r_top1``, ``in_sketch_top1``, ``in_v2_top1``,
``in_c_mce``, ``in_c_ce/<corruption>``; details (top-5, per-severity errors, timings, notes) go to
``robustness.json``.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import ConcatDataset, Dataset
from torchvision import transforms as T

from maskalign.atomic import atomic_write_text
from maskalign.config import ConfigError
from maskalign.data.imagenet import DataError, SafeImageFolder
from maskalign.data.transforms import eval_transform
from maskalign.distributed import DistInfo
from maskalign.encoders.preprocess import Preprocess
from maskalign.encoders.report import group_of
from maskalign.metric_names import Metric, in_c_ce
from maskalign.progress import Progress
from maskalign.tasks.context import RunContext
from maskalign.transfer.accuracy import Tagged, evaluate, evaluate_groups
from maskalign.transfer.classifier import load_classifier
from maskalign.transfer.data import encoder_preprocess, eval_loader
from maskalign.transfer.label_space import LabelSpace, for_classes
from maskalign.transfer.metrics import CORRUPTIONS, SEVERITIES, corruption_errors, mean_corruption_error
from maskalign.transfer.source import PretrainedEncoder, load_pretrained


@dataclass(frozen=True)
class Benchmark:
    key: str            # name in configs and metrics (in_a -> in_a_top1)
    data_key: str       # data.<data_key> path for real data
    title: str
    subset: str | None = None   # label-space subset whose logits are scored
    index_folders: bool = False  # folders named 0..K-1 (ImageNet-V2)


BENCHMARKS: dict[str, Benchmark] = {b.key: b for b in (
    Benchmark("in1k", "root", "ImageNet val"),
    Benchmark("in_a", "imagenet_a", "ImageNet-A", subset="imagenet_a"),
    Benchmark("in_r", "imagenet_r", "ImageNet-R", subset="imagenet_r"),
    Benchmark("in_sketch", "imagenet_sketch", "ImageNet-Sketch"),
    Benchmark("in_v2", "imagenet_v2", "ImageNet-V2"),
    Benchmark("in_c", "imagenet_c", "ImageNet-C"),
)}


def folder_dataset(root: Path, class_to_idx: dict[str, int], transform: Callable, what: str) -> SafeImageFolder:
    """Class folders read with a fixed folder -> target map; refuses folders it cannot label."""
    if not root.is_dir():
        raise DataError(f"{what}: folder not found: {root}")
    present = {p.name for p in root.iterdir() if p.is_dir()}
    unknown = sorted(present - set(class_to_idx))
    if unknown:
        raise DataError(f"{what} at {root}: {len(unknown)} folder(s) outside the classifier's label space, "
                        f"e.g. {unknown[:3]}")
    missing = sorted(set(class_to_idx) - present)
    if missing:
        raise DataError(f"{what} at {root}: lacks {len(missing)} of its {len(class_to_idx)} class folders, "
                        f"e.g. {missing[:3]}")
    return SafeImageFolder(root, transform=transform, class_to_idx=class_to_idx)


def _as_evaluated(source: PretrainedEncoder, model: torch.nn.Module) -> PretrainedEncoder:
    """``source`` with a loading report of what this job runs: the whole classifier, head included.

    The encoder loader reads a classifier file as an encoder and so reports its head as dropped
    ("jobs train a fresh one"); robustness evaluates the fine-tuned classifier as it is, head and
    all, so every group of the file that the classifier holds is reported as used.
    """
    report = copy.deepcopy(source.report)
    held = {group_of(k) for k in model.state_dict()}
    moved = sorted(g for g in report.dropped if g in held)
    for g in moved:
        n, _ = report.dropped.pop(g)
        report.used[g] = report.used.get(g, 0) + n
    if moved:
        report.notes.append(f"the fine-tuned classifier is evaluated as it is: {', '.join(moved)} used, not dropped")
    return replace(source, loaded=replace(source.loaded, report=report))


def benchmark_paths(cfg: Any, wanted: list[str]) -> tuple[dict[str, Path | None], str]:
    """Folder of each wanted benchmark, and ``"demo"`` or ``"real"``."""
    d = cfg.data
    real = any(d.get(BENCHMARKS[k].data_key) for k in BENCHMARKS)
    paths: dict[str, Path | None] = {}
    if real:
        for k in wanted:
            p = d.get(BENCHMARKS[k].data_key)
            paths[k] = (Path(str(p)).expanduser() / "val" if k == "in1k" else Path(str(p)).expanduser()) if p else None
        return paths, "real"
    from maskalign.data.demo_world import ensure_imagenet
    from maskalign.data.demo_world.robustness_layouts import ensure_robustness_set

    for k in wanted:
        if k == "in1k":
            paths[k] = ensure_imagenet(d.demo_root or None) / "val"
        else:
            n = d.demo_c_per_class if k == "in_c" else d.demo_per_class
            paths[k] = ensure_robustness_set(BENCHMARKS[k].data_key, d.demo_root or None, per_class=int(n))
    return paths, "demo"


def _c_transform(kind: str, img_size: int, crop_pct: float, prep: Preprocess | None = None) -> Callable:
    prep = prep or Preprocess()
    if kind == "eval":
        return eval_transform(img_size, crop_pct, prep.mean, prep.std, prep.interpolation)
    if kind == "center_crop":  # hendrycks ImageNet-C/test.py: the 224-px JPEGs are only center-cropped
        return T.Compose([T.CenterCrop(img_size), T.ToTensor(), T.Normalize(prep.mean, prep.std)])
    raise ConfigError(f"data.imagenet_c_preprocess: unknown {kind!r}; use eval or center_crop")


class _Scorer:
    """Evaluates data sets one after another with one model, keeping the image count and time."""

    def __init__(self, model: torch.nn.Module, info: DistInfo, cfg: Any) -> None:
        self.model, self.info, self.cfg = model, info, cfg
        self.images, self.seconds = 0, 0.0

    def __call__(self, dataset: SafeImageFolder, indices: list[int] | None = None) -> dict[str, float]:
        t0 = time.time()
        loader = eval_loader(dataset, int(self.cfg.data.batch_size), self.info, int(self.cfg.data.num_workers))
        progress = Progress(f"robustness {getattr(dataset, 'title', '')}".strip(), len(loader), unit="batches",
                            enabled=self.info.is_main)
        stats = evaluate(self.model, loader, self.info.device, self.cfg.runtime.amp, indices, progress=progress)
        dt = time.time() - t0
        self.images += stats["n"]
        self.seconds += dt
        return {**stats, "seconds": dt, "images_per_s": stats["n"] / max(dt, 1e-9)}

    def groups(self, dataset: Dataset, n_groups: int) -> torch.Tensor:
        t0 = time.time()
        loader = eval_loader(dataset, int(self.cfg.data.batch_size), self.info, int(self.cfg.data.num_workers))
        progress = Progress("robustness ImageNet-C", len(loader), unit="batches", enabled=self.info.is_main)
        counts = evaluate_groups(self.model, loader, self.info.device, n_groups, self.cfg.runtime.amp,
                                 progress=progress)
        self.images += int(counts[:, 2].sum().item())
        self.seconds += time.time() - t0
        return counts


def evaluate_imagenet_c(score: _Scorer, root: Path, space: LabelSpace, transform: Callable,
                        notes: list[str]) -> dict[str, Any]:
    """Per-corruption errors over severities 1-5; missing or incomplete corruptions are noted and skipped.

    All complete corruption x severity folders are scored in one pass (:func:`evaluate_groups`).
    """
    if not root.is_dir():
        raise DataError(f"ImageNet-C: folder not found: {root}")
    parts: list[Tagged] = []
    groups: list[tuple[str, int]] = []
    for c in CORRUPTIONS:
        if not (root / c).is_dir():
            notes.append(f"ImageNet-C: corruption '{c}' is missing from {root}")
            continue
        try:
            sets = [folder_dataset(root / c / str(s), space.class_to_idx(), transform, f"ImageNet-C {c}/{s}")
                    for s in SEVERITIES]
        except DataError as e:
            notes.append(f"ImageNet-C: corruption '{c}' is incomplete ({e})")
            continue
        for s, ds in zip(SEVERITIES, sets):
            parts.append(Tagged(ds, len(groups)))
            groups.append((c, s))
    extra = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name not in CORRUPTIONS)
    if extra:
        notes.append(f"ImageNet-C: held-out or unknown corruptions, not in the mCE and not evaluated: {extra}")
    errors: dict[str, list[float]] = {}
    per_severity: dict[str, dict[str, float]] = {}
    if parts:
        counts = score.groups(ConcatDataset(parts), len(groups))
        for (c, s), (top1, _, n) in zip(groups, counts.tolist()):
            errors.setdefault(c, []).append(1.0 - top1 / max(n, 1.0))
            per_severity.setdefault(c, {})[str(s)] = 100.0 * (1.0 - top1 / max(n, 1.0))
        if score.info.is_main:
            for c, errs in errors.items():
                print(f"[robustness] ImageNet-C {c}: error % by severity "
                      + " ".join(f"{100 * e:.1f}" for e in errs), flush=True)
    ce = corruption_errors(errors)
    mce = mean_corruption_error(ce)
    if not math.isfinite(mce):
        notes.append(f"ImageNet-C: mCE is NaN (partial): {len(ce)} of {len(CORRUPTIONS)} corruptions evaluated")
    return {"error_pct": per_severity, "ce": ce, "mce": mce}


def run(ctx: RunContext) -> dict[str, Any]:
    """Evaluate the context's classifier on every configured benchmark; return the metrics, write details."""
    cfg, info, out, ckpt = ctx.config, ctx.dist, ctx.folder, ctx.spec.ckpt
    wanted = [str(b) for b in cfg.benchmarks]
    unknown = [b for b in wanted if b not in BENCHMARKS]
    if unknown:
        raise ConfigError(f"benchmarks: unknown {unknown}; known: {list(BENCHMARKS)}")
    model, saved = load_classifier(ckpt)
    model.to(info.device)
    # The record's source is the classifier as it is evaluated (its head used, not dropped), read now
    # rather than after the evaluation.
    ctx.source = _as_evaluated(load_pretrained(ckpt), model)
    for line in ctx.source.describe():
        ctx.log(line)
    space = for_classes(saved.get("classes") or [])
    if space.num_classes != saved["classifier"]["num_classes"]:
        raise DataError(f"{ckpt}: its class list ({space.num_classes}) does not match its head "
                        f"({saved['classifier']['num_classes']} outputs)")
    img_size = int(saved["classifier"]["img_size"])
    crop_pct = float(cfg.data.crop_pct if cfg.data.crop_pct is not None else saved.get("crop_pct", 0.875))
    prep = encoder_preprocess(ctx.source.meta)  # the encoder's statistics, stored by its fine-tune
    transform = eval_transform(img_size, crop_pct, prep.mean, prep.std, prep.interpolation)
    paths, mode = benchmark_paths(cfg, wanted)
    if info.is_main:
        print(f"[robustness] {cfg.name}: {ckpt} ({space.name} label space, {space.num_classes} classes, "
              f"{img_size}px, crop {crop_pct}) on {mode} data", flush=True)
    score = _Scorer(model, info, cfg)
    metrics: dict[str, float] = {}
    details: dict[str, Any] = {"label_space": space.name, "data": mode, "img_size": img_size, "crop_pct": crop_pct,
                               "preprocess": prep.as_dict(),
                               "imagenet_c_preprocess": cfg.data.imagenet_c_preprocess, "benchmarks": {}}
    notes: list[str] = []
    t_start = time.time()
    for key in wanted:
        bench, path = BENCHMARKS[key], paths.get(key)
        if path is None:
            notes.append(f"{bench.title}: skipped (no data.{bench.data_key} given)")
            continue
        if key == "in_c":
            n0, t0 = score.images, time.time()
            res = evaluate_imagenet_c(score, path, space, _c_transform(cfg.data.imagenet_c_preprocess, img_size,
                                                                        crop_pct, prep), notes)
            metrics[str(Metric.IN_C_MCE)] = res["mce"]
            metrics.update({in_c_ce(c): v for c, v in res["ce"].items()})
            n, dt = score.images - n0, time.time() - t0
            details["benchmarks"][key] = {"path": str(path), "n": n, "seconds": dt, "images_per_s": n / max(dt, 1e-9),
                                          **res}
            continue
        if bench.subset:
            c2i, indices = space.subset_class_to_idx(bench.subset), space.subset_indices(bench.subset)
        else:
            c2i = space.index_folders() if key == "in_v2" else space.class_to_idx()
            indices = None
        stats = score(folder_dataset(path, c2i, transform, bench.title), indices)
        metrics[str(Metric(f"{key}_top1"))] = stats["top1"]  # a declared name, or ValueError
        details["benchmarks"][key] = {"path": str(path), "classes": len(c2i), **stats}
        if info.is_main:
            print(f"[robustness] {bench.title}: top-1 {stats['top1']:.2f} top-5 {stats['top5']:.2f} "
                  f"({stats['n']} images, {stats['images_per_s']:.0f} img/s)", flush=True)
    details.update(notes=notes, images=score.images, seconds=time.time() - t_start,
                   images_per_s=score.images / max(score.seconds, 1e-9), metrics=metrics)
    result = {"metrics": metrics, "notes": notes, "out_dir": str(out), "details": details}
    if info.is_main:
        for n in notes:
            print(f"[robustness] note: {n}", flush=True)
        atomic_write_text(out / "robustness.json", json.dumps(details, indent=2, default=str) + "\n")
        if "in_c_mce" in metrics:
            print(f"[robustness] ImageNet-C mCE {metrics['in_c_mce']:.2f}", flush=True)
    return result
