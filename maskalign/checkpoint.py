"""Checkpoint files: what resuming needs, what transfer jobs consume, and how to read both.

Three files per pre-training run (``OUTPUT/pretrain/<run>/``):

* ``checkpoint.pth``: everything needed to resume (student and the objective's own modules,
  optimizer, grad scaler, epoch, step, config, RNG states). Never the frozen teacher's weights.
* ``encoder.pth``: the student encoder alone, tensors only, in timm's key names, loadable into
  ``timm.models.vision_transformer.VisionTransformer``; with ``encoder.json`` beside it (arch
  and what pre-trained it: method, supervision, ratios, epochs).
* ``pretrain_model.pth``: the full pre-training model (decoder, adaptors, DA...) as tensors, the
  file MAE-family users keep asking for; with ``pretrain_model.json`` beside it (the same metadata).

Every file that holds an encoder carries its arch (a ``.json`` sidecar, or the ``meta`` entry of
``checkpoint.pth``): the head count cannot be read off the tensors. For a foreign file without
one, :func:`infer_arch` accepts only timm's standard widths and refuses to guess any other.

Everything is written atomically and read with ``torch.load(weights_only=True)`` (:mod:`maskalign.safe_load`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from maskalign.atomic import atomic_torch_save, atomic_write_text
from maskalign.errors import CheckpointError
from maskalign.safe_load import load_weights

CHECKPOINT = "checkpoint.pth"
ENCODER = "encoder.pth"
FULL_MODEL = "pretrain_model.pth"

# timm's standard ViTs (vit_tiny/small/base/large_patch16, vit_huge_patch14): width -> heads. Only
# these widths have a head count one can assume; ViT-H is 80 channels per head, not 64.
STANDARD_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16}

_ENCODER_KEY = re.compile(r"^(cls_token|pos_embed|patch_embed\..*|blocks\.\d+\..*|norm\.(weight|bias))$")


def load_file(path: str | Path) -> Any:
    """Tensors and plain values only (:func:`maskalign.safe_load.load_weights`); one line otherwise."""
    return load_weights(path, error=CheckpointError)


def save_training_checkpoint(out_dir: str | Path, state: dict[str, Any], keep_epoch: int | None = None) -> Path:
    path = atomic_torch_save(state, Path(out_dir) / CHECKPOINT)
    if keep_epoch is not None:
        atomic_torch_save(state, Path(out_dir) / f"checkpoint-{keep_epoch}.pth")
    return path


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest complete checkpoint: ``checkpoint.pth``, else the highest ``checkpoint-N.pth``."""
    out = Path(out_dir)
    if (out / CHECKPOINT).is_file():
        return out / CHECKPOINT
    numbered = [(int(m.group(1)), p) for p in out.glob("checkpoint-*.pth")
                if (m := re.fullmatch(r"checkpoint-(\d+)\.pth", p.name))]
    return max(numbered)[1] if numbered else None


def export_encoder(out_dir: str | Path, encoder_state: dict[str, torch.Tensor], meta: dict[str, Any],
                   full_model: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``encoder.pth`` + ``encoder.json`` (and ``pretrain_model.pth`` when given)."""
    out = Path(out_dir)
    atomic_torch_save({k: v.contiguous() for k, v in encoder_state.items()}, out / ENCODER)
    atomic_write_text(out / "encoder.json", json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
    if full_model is not None:
        atomic_torch_save({k: v.contiguous() for k, v in full_model.items()}, out / FULL_MODEL)
        atomic_write_text((out / FULL_MODEL).with_suffix(".json"),
                          json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
    return out / ENCODER


def _strip(state: dict[str, Any], prefixes: tuple[str, ...]) -> dict[str, Any]:
    out = {}
    for k, v in state.items():
        for p in prefixes:
            if k.startswith(p):
                k = k[len(p):]
                break
        out[k] = v
    return out


def load_encoder_state(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The encoder tensors (timm key names) and the pre-training metadata of any supported file.

    Accepts this project's ``encoder.pth`` (+ ``.json``), its ``checkpoint.pth`` or
    ``pretrain_model.pth``, and MAE-family checkpoints (``{"model": {...}}``, teacher and decoder
    keys dropped). Refuses, with one line, a file holding no ViT encoder.
    """
    path = Path(path)
    obj = load_file(path)
    meta: dict[str, Any] = {}
    if isinstance(obj, dict) and isinstance(obj.get("meta"), dict):
        meta = dict(obj["meta"])
    side = path.with_suffix(".json")
    if side.is_file():
        try:
            meta = {**json.loads(side.read_text()), **meta}
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{side}: unreadable metadata ({e})") from None
    state = obj.get("model", obj.get("state_dict", obj)) if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds no state dict")
    state = _strip(state, ("module.", "encoder.", "backbone."))
    enc = {k: v for k, v in state.items() if _ENCODER_KEY.match(k) and isinstance(v, torch.Tensor)}
    if ("cls_token" not in enc or not any(k.startswith("patch_embed.") for k in enc)
            or not any(k.startswith("blocks.") for k in enc)):
        raise CheckpointError(f"{path}: no ViT encoder weights found "
                              "(expected cls_token, patch_embed.proj.*, blocks.*)")
    if "arch" not in meta:
        meta["arch"] = infer_arch(enc, str(path))
    return enc, meta


def standard_num_heads(embed_dim: int, source: str = "encoder") -> int:
    """The head count of a standard-width ViT; a one-line ``CheckpointError`` for any other width."""
    if embed_dim not in STANDARD_HEADS:
        raise CheckpointError(f"{source}: no arch metadata (a .json sidecar or an embedded 'meta') and width "
                              f"{embed_dim} is not a standard ViT width ({sorted(STANDARD_HEADS)}), so its head "
                              f"count is unknown; write {{\"arch\": {{..., \"num_heads\": N}}}} beside it")
    return STANDARD_HEADS[embed_dim]


def infer_arch(state: dict[str, torch.Tensor], source: str = "encoder") -> dict[str, Any]:
    """Arch of a timm-keyed ViT from tensor shapes; the head count only for standard widths."""
    w = state["patch_embed.proj.weight"]
    dim, patch = w.shape[0], w.shape[-1]
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    grid = int(round((state["pos_embed"].shape[1] - 1) ** 0.5)) if "pos_embed" in state else 14
    hidden = state["blocks.0.mlp.fc1.weight"].shape[0]
    return {"img_size": grid * patch, "patch_size": patch, "embed_dim": dim, "depth": depth,
            "num_heads": standard_num_heads(dim, source), "mlp_ratio": hidden / dim}


def build_timm_vit(arch: dict[str, Any], state: dict[str, torch.Tensor] | None = None, num_classes: int = 0,
                   global_pool: str = "token", drop_path_rate: float = 0.0, img_size: int | None = None,
                   strict_encoder: bool = True) -> torch.nn.Module:
    """A timm ViT of the given arch, optionally loaded from ``state`` (position grid resized)."""
    from timm.models.vision_transformer import VisionTransformer

    from maskalign.models.pos_embed import resize_pos_embed

    size = img_size or arch["img_size"]
    model = VisionTransformer(img_size=size, patch_size=arch["patch_size"], embed_dim=arch["embed_dim"],
                              depth=arch["depth"], num_heads=arch["num_heads"],
                              mlp_ratio=arch.get("mlp_ratio", 4.0), num_classes=num_classes,
                              global_pool=global_pool, drop_path_rate=drop_path_rate,
                              fc_norm=None)
    if state is not None:
        state = dict(state)
        if "pos_embed" in state and state["pos_embed"].shape != model.pos_embed.shape:
            grid = model.patch_embed.grid_size
            state["pos_embed"] = resize_pos_embed(state["pos_embed"], grid)
        missing, unexpected = model.load_state_dict(state, strict=False)
        bad = [k for k in missing if not k.startswith(("head.", "fc_norm."))]
        if strict_encoder and (bad or unexpected):
            raise CheckpointError(f"encoder does not fit a ViT {arch}: missing {bad[:5]}, unexpected {unexpected[:5]}")
    return model
