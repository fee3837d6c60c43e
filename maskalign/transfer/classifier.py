"""Classifiers on a pre-trained encoder: building them, loading the encoder, saying what was loaded.

A transfer job starts from the encoder of *any* pre-training objective or published family
(``load_pretrained`` -> :mod:`maskalign.encoders`) and builds that family's timm model around it
(:func:`classifier_from`: DINOv2 with its layer scale and registers, CLIP with its pre-norm and
activation, BEiT with its relative position bias...), keeping MAE's recipe:

* fine-tuning (MAE ``models_vit.py`` with ``global_pool``): average of the patch tokens, a fresh
  ``fc_norm`` in place of the final ``norm``, a fresh head with ``trunc_normal_(std=2e-5)``;
* linear probing (MAE ``main_linprobe.py``): the [CLS] token after the final ``norm``, then
  ``BatchNorm1d(affine=False, eps=1e-6)`` and a linear layer with ``trunc_normal_(std=0.01)``;
  everything but the head is frozen.

Loading is ``strict=False`` but checked: a new head / ``fc_norm`` (and an unused final ``norm``
under global pooling) is expected and reported; any other missing or unexpected tensor -- a
missing block, an encoder of another shape -- is refused with one line. A position table made at
another resolution is resized bicubically on the patch grid, the [CLS] row kept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from maskalign.checkpoint import CheckpointError, load_file
from maskalign.encoders import build_model
from maskalign.models.pos_embed import resize_pos_embed

_NEW_OK = ("head.", "fc_norm.", "norm.")


@dataclass
class LoadReport:
    """What happened when encoder weights were put into a classifier."""

    loaded: int
    new: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    pos_embed_resized: tuple[int, int] | None = None

    def summary(self) -> str:
        parts = [f"loaded {self.loaded} tensors"]
        if self.new:
            parts.append(f"new (initialised here): {', '.join(self.new)}")
        if self.unused:
            parts.append(f"unused: {', '.join(self.unused)}")
        if self.pos_embed_resized:
            parts.append("pos_embed resized {}x{} -> {}x{}".format(*self.pos_embed_resized))
        return "; ".join(parts)


def _describe(keys: list[str]) -> str:
    """``blocks.3.*`` style summary of many keys, so the error stays one readable line."""
    blocks = sorted({int(m.group(1)) for k in keys if (m := re.match(r"blocks\.(\d+)\.", k))})
    other = [k for k in keys if not k.startswith("blocks.")]
    parts = [f"blocks {','.join(map(str, blocks))}"] if blocks else []
    return ", ".join(parts + other[:4]) + (" ..." if len(other) > 4 else "")


def load_encoder_into(model: nn.Module, state: dict[str, torch.Tensor], origin: str | Path) -> LoadReport:
    """Load encoder tensors into a timm ViT; refuse (one line) anything but an expected new head."""
    state = {k: v for k, v in state.items() if not k.startswith(("head.", "fc_norm."))}
    resized = None
    pe = state.get("pos_embed")
    if pe is not None and pe.shape != model.pos_embed.shape:
        if pe.shape[-1] != model.pos_embed.shape[-1]:
            raise CheckpointError(f"{origin}: pos_embed width {pe.shape[-1]} does not fit embed dim "
                                  f"{model.pos_embed.shape[-1]}")
        grid = tuple(model.patch_embed.grid_size)
        old = round((pe.shape[1] - 1) ** 0.5)
        state["pos_embed"] = resize_pos_embed(pe, grid)
        resized = (old, old, grid[0], grid[1])
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches: another arch than the metadata says
        first = str(e).strip().splitlines()
        raise CheckpointError(f"{origin}: encoder does not fit the classifier "
                              f"({(first[1] if len(first) > 1 else first[0]).strip()[:160]})") from None
    bad_missing = [k for k in missing if not k.startswith(_NEW_OK)]
    if bad_missing:
        raise CheckpointError(f"{origin}: checkpoint lacks encoder weights: {_describe(bad_missing)}")
    bad_unexpected = [k for k in unexpected if not k.startswith("norm.")]
    if bad_unexpected:
        raise CheckpointError(f"{origin}: checkpoint holds tensors this ViT has no place for: "
                              f"{_describe(bad_unexpected)}")
    return LoadReport(loaded=len(state) - len(unexpected), new=sorted(missing), unused=sorted(unexpected),
                      pos_embed_resized=resized)


def _pool(arch: dict[str, Any], global_pool: str) -> dict[str, Any]:
    """``global_pool`` with timm's automatic fc_norm (on for "avg"): BEiT calls the switch ``use_fc_norm``."""
    switch = "use_fc_norm" if str(arch.get("timm_model", "")).startswith("beit") else "fc_norm"
    return {"global_pool": global_pool, switch: None}


def _with_head(model: nn.Module, kind: str, head_init_std: float) -> nn.Module:
    """MAE's heads: ``trunc_normal_`` init; for linear probing BatchNorm in front and all else frozen."""
    head = model.head
    if not isinstance(head, nn.Linear):  # num_classes=0: an encoder without a head
        return model
    nn.init.trunc_normal_(head.weight, std=head_init_std)
    nn.init.zeros_(head.bias)
    if kind == "linprobe":
        model.head = nn.Sequential(nn.BatchNorm1d(head.in_features, affine=False, eps=1e-6), head)
        for name, p in model.named_parameters():
            p.requires_grad = name.startswith("head.")
    return model


def build_classifier(arch: dict[str, Any], num_classes: int, *, kind: str = "finetune", img_size: int | None = None,
                     global_pool: str = "avg", drop_path: float = 0.0, head_init_std: float = 2e-5) -> nn.Module:
    """A fresh timm classifier of ``arch`` (any family :mod:`maskalign.encoders` builds; no weights loaded).

    ``kind="finetune"``: head ``Linear`` after ``global_pool`` ("avg" adds ``fc_norm``).
    ``kind="linprobe"``: head ``BatchNorm1d(affine=False) -> Linear``, every other tensor frozen.
    """
    if kind not in ("finetune", "linprobe"):
        raise ValueError(f"unknown classifier kind {kind!r}")
    model = build_model(arch, img_size, num_classes=num_classes, drop_path_rate=drop_path, **_pool(arch, global_pool))
    return _with_head(model, kind, head_init_std)


def _check_final_norm(source: Any, global_pool: str) -> None:
    """A [CLS]-token classifier reads the token through the file's final ``norm``: refuse a file without one.

    A global-pool checkpoint (``fc_norm``, no ``norm``) would otherwise get a fresh LayerNorm -- the
    identity at init, and frozen under linear probing -- and a probe of features the encoder never
    produced. MAE's ``main_linprobe.py`` refuses it as well: without ``--global_pool`` the only keys
    it lets the file lack are the head's (``assert set(msg.missing_keys) == {'head.weight', 'head.bias'}``).
    Probing such a file with ``model.global_pool=avg`` uses its ``fc_norm``, as it was trained.
    """
    state = source.state
    if global_pool == "avg" or "norm.weight" in state:
        return
    has_fc = "fc_norm.weight" in state
    raise CheckpointError(f"{source.path}: no final norm (norm.*) to read the [CLS] token through"
                          f"{' (it holds fc_norm: a global-pool checkpoint)' if has_fc else ''}; model.global_pool="
                          f"{global_pool} would put a fresh LayerNorm there (MAE's probe refuses such a file too)"
                          f"{'; use model.global_pool=avg, which pools through its fc_norm' if has_fc else ''}")


def classifier_from(source: Any, num_classes: int, *, kind: str = "finetune", img_size: int | None = None,
                    global_pool: str = "avg", drop_path: float = 0.0, head_init_std: float = 2e-5
                    ) -> tuple[nn.Module, LoadReport]:
    """The classifier of :func:`build_classifier` with ``source``'s encoder loaded into it, exactly.

    ``source`` is a ``PretrainedEncoder``; position tables are resampled the family's way; only a
    new head / ``fc_norm`` may be missing and only the final ``norm`` (global pooling) unused.
    """
    if kind not in ("finetune", "linprobe"):
        raise ValueError(f"unknown classifier kind {kind!r}")
    _check_final_norm(source, global_pool)
    new_ok = _NEW_OK if global_pool == "avg" else ("head.", "fc_norm.")
    model, new, unused = source.loaded.build(img_size, new_ok=new_ok, unused_ok=("norm.",), num_classes=num_classes,
                                             drop_path_rate=drop_path, **_pool(source.arch, global_pool))
    old, now = int(source.arch["img_size"]), int(img_size or source.arch["img_size"])
    p = int(source.arch["patch_size"])
    resized = (old // p, old // p, now // p, now // p) if old != now else None
    n_loaded = sum(1 for k in model.state_dict() if k not in set(new))
    return _with_head(model, kind, head_init_std), LoadReport(loaded=n_loaded, new=new, unused=unused,
                                                              pos_embed_resized=resized)


def classifier_spec(arch: dict[str, Any], num_classes: int, kind: str, img_size: int,
                    global_pool: str) -> dict[str, Any]:
    """What :func:`load_classifier` needs to rebuild a trained classifier (saved in its checkpoint)."""
    return {"arch": dict(arch), "num_classes": int(num_classes), "kind": kind, "img_size": int(img_size),
            "global_pool": global_pool}


def load_classifier(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """A trained classifier saved by ``transfer/finetune.py`` or ``transfer/linprobe.py``.

    Returns the model (eval mode) and the checkpoint's other entries (``classes``, ``spec``,
    ``meta``...). A pre-training checkpoint -- an encoder without a trained head -- is refused with
    one line.
    """
    obj = load_file(path)
    spec = obj.get("classifier") if isinstance(obj, dict) else None
    if not isinstance(spec, dict) or not isinstance(obj.get("model"), dict):
        raise CheckpointError(f"{path}: not a trained classifier (no 'classifier' entry); evaluate a checkpoint "
                              f"written by transfer/finetune.py or transfer/linprobe.py")
    model = build_classifier(spec["arch"], spec["num_classes"], kind=spec["kind"], img_size=spec["img_size"],
                             global_pool=spec["global_pool"])
    try:
        model.load_state_dict(obj["model"], strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit the classifier it describes "
                              f"({str(e).strip().splitlines()[0][:160]})") from None
    model.eval()
    return model, {k: v for k, v in obj.items() if k not in ("model", "optimizer", "rng")}
