"""Where the COCO data comes from, and registering it under detectron2's standard names.

The configs name ``coco_2017_train`` and ``coco_2017_val``, as ViTDet's do. detectron2 registers
those at import time under ``$DETECTRON2_DATASETS/coco`` (default ``./datasets``); this module
registers them again under the folder this run uses, so that one config serves the demo world and
real COCO alike:

* ``--data DIR``: ``DIR/coco/`` (detectron2's layout, ``DIR`` = ``$DETECTRON2_DATASETS``) or ``DIR``
  itself when it holds ``annotations/`` (a COCO folder);
* else ``$DETECTRON2_DATASETS`` when it is set;
* else the demo world's COCO copy (``maskalign.data.demo_world.ensure_coco``), built on first use.

Either way the folder holds ``train2017/``, ``val2017/`` and ``annotations/instances_{train,val}2017.json``.
The category list (and so ``num_classes``) comes from the annotation file. An annotation file that
names an image missing on disk, or holds a malformed box, polygon or category, fails before training
with one line naming the file and the entry; the dataset dicts
are loaded once per process and reused by the loaders.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maskalign.errors import DataError

SPLITS = {"train": ("coco_2017_train", "train2017"), "val": ("coco_2017_val", "val2017")}
DEMO = "demo"


@dataclass(frozen=True)
class CocoSource:
    root: Path  # the folder holding train2017/, val2017/, annotations/
    kind: str  # "demo" or "coco"

    def annotation_file(self, split: str) -> Path:
        return self.root / "annotations" / f"instances_{SPLITS[split][1]}.json"

    def image_dir(self, split: str) -> Path:
        return self.root / SPLITS[split][1]


def resolve_source(data: str | os.PathLike | None) -> CocoSource:
    """The COCO folder a run uses (see the module docstring); one-line error when it is not there."""
    if data is None and os.environ.get("DETECTRON2_DATASETS"):
        data = os.environ["DETECTRON2_DATASETS"]
        origin = "$DETECTRON2_DATASETS"
    else:
        origin = "--data"
    if data is None or str(data) == DEMO:
        from maskalign.data.demo_world import ensure_coco

        return CocoSource(Path(ensure_coco()), DEMO)
    d = Path(data).expanduser()
    if not d.is_dir():
        raise DataError(f"{origin} {d}: no such folder (expected a folder holding coco/ or annotations/)")
    for cand in (d / "coco", d):
        if (cand / "annotations").is_dir():
            return CocoSource(cand.resolve(), "coco")
    raise DataError(f"{origin} {d}: neither {d / 'coco' / 'annotations'} nor {d / 'annotations'} exists")


def _check_split(src: CocoSource, split: str, need_images: bool = True) -> None:
    ann = src.annotation_file(split)
    if not ann.is_file():
        raise DataError(f"{ann}: annotation file not found")
    if need_images and not src.image_dir(split).is_dir():
        raise DataError(f"{src.image_dir(split)}: image folder not found (annotations: {ann.name})")


_CACHE: dict[str, list[dict[str, Any]]] = {}


def _load_split(src: CocoSource, split: str, name: str) -> list[dict[str, Any]]:
    """detectron2's COCO reader, plus the checks whose failure would otherwise surface mid-training."""
    if name in _CACHE:
        return _CACHE[name]
    from detectron2.data.datasets.coco import load_coco_json

    ann = src.annotation_file(split)
    try:
        dicts = load_coco_json(str(ann), str(src.image_dir(split)), name)
    except json.JSONDecodeError as e:
        raise DataError(f"{ann}: not valid JSON ({e})") from None
    except (KeyError, TypeError, ValueError, AssertionError) as e:
        raise DataError(f"{ann}: not a COCO instances file ({type(e).__name__}: {e})") from None
    for d in dicts:
        if not os.path.isfile(d["file_name"]):
            raise DataError(
                f"{ann}: image id {d['image_id']} refers to {d['file_name']}, which does not exist"
            )
        for j, obj in enumerate(d.get("annotations", [])):
            problem = _annotation_problem(obj)
            if problem:
                raise DataError(f"{ann}: image id {d['image_id']}, annotation {j}: {problem}")
    _CACHE[name] = dicts
    return dicts


def _finite_numbers(values: Any) -> bool:
    return isinstance(values, (list, tuple)) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)


def _annotation_problem(obj: dict[str, Any]) -> str | None:
    """What is wrong with one instance annotation (as detectron2's reader returns it), else ``None``.

    Checked before training: a malformed box or polygon otherwise fails inside a data-loader worker
    at iteration 0, as a long traceback naming neither the file nor the entry.
    """
    box = obj.get("bbox")
    if not _finite_numbers(box) or len(box) != 4 or box[2] < 0 or box[3] < 0:
        return f"bbox {box!r} is not [x, y, width, height] of finite numbers with width, height >= 0"
    seg = obj.get("segmentation")
    if seg is not None:
        if isinstance(seg, dict):
            if not {"counts", "size"} <= set(seg):
                return f"segmentation is an RLE without 'counts' and 'size' (keys {sorted(seg)})"
        elif isinstance(seg, list):
            for k, poly in enumerate(seg):
                if not _finite_numbers(poly) or len(poly) < 6 or len(poly) % 2:
                    return (f"segmentation polygon {k} is not a list of an even number (>= 6) of finite "
                            f"coordinates")
        else:
            return f"segmentation is a {type(seg).__name__}, neither polygons (a list) nor an RLE (an object)"
    if not isinstance(obj.get("category_id"), int):
        return f"category_id {obj.get('category_id')!r} is not one of the file's categories"
    return None


def register(src: CocoSource) -> dict[str, Any]:
    """(Re-)register ``coco_2017_{train,val}`` on ``src``; returns names and the category list."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    out: dict[str, Any] = {"root": str(src.root), "kind": src.kind}
    for split, (name, _) in SPLITS.items():
        if not src.annotation_file(split).is_file():
            continue
        _check_split(src, split)
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
        _CACHE.pop(name, None)
        DatasetCatalog.register(name, lambda s=src, sp=split, n=name: _load_split(s, sp, n))
        MetadataCatalog.get(name).set(
            json_file=str(src.annotation_file(split)),
            image_root=str(src.image_dir(split)),
            evaluator_type="coco",
        )
        out[split] = name
    if "val" not in out:
        raise DataError(f"{src.annotation_file('val')}: annotation file not found")
    return out


def categories(src: CocoSource, split: str) -> list[str]:
    """Class names in contiguous-id order, as detectron2's COCO reader assigns them."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    name = SPLITS[split][0]
    DatasetCatalog.get(name)  # loads (and checks) the split, and sets thing_classes
    return list(MetadataCatalog.get(name).thing_classes)
