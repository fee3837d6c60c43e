"""From a checkpoint's tensors to the timm model's tensors, accounting for every key.

Three steps, each on plain dicts:

1. :func:`unwrap` -- the state dict inside the file (``model``, ``state_dict``, ``module``, DINO's
   ``teacher``...), ``module.`` / ``encoder.`` / ``backbone.`` prefixes removed, metadata kept;
2. :func:`split_dropped` -- the tensors left out on purpose, each with its reason (decoders,
   teachers, adaptors, heads, mask tokens, CLIP's text tower and projection);
3. :func:`to_timm_names` then :func:`fit_to_model` -- timm's own converters: ``_convert_openai_clip``
   and ``_convert_dinov2`` rename official layouts, and the family's ``checkpoint_filter_fn``
   (``vision_transformer``'s with ``adapt_layer_scale`` for DeiT III, ``beit``'s for BEiT) resamples
   position tables (``resample_abs_pos_embed``, ``resize_rel_pos_bias_table``) to the model's grid.
   Plain MAE-style ViTs keep MAE's own interpolation (bicubic, no antialias), as before.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from maskalign.encoders.report import LoadingReport, describe_keys
from maskalign.encoders.source_spec import CheckpointError
from maskalign.safe_load import load_weights

_CONTAINERS = ("model", "state_dict", "module", "model_ema", "state_dict_ema")

_DROP_ANY = (
    (re.compile(r"^(teacher|clip_model|dino_model|target_model|teacher_model)\."), "frozen teacher of pre-training"),
    (re.compile(r"^(distill_heads|distill_weights|adaptors?|da|align_heads?)(\.|$)"),
     "pre-training adaptors / dynamic alignment"),
    (re.compile(r"^(decoder\w*|dec_norms|wfm|mask_token)(\.|$)"), "pre-training decoder and mask token"),
    (re.compile(r"^(ema|projector|predictor|momentum_encoder|target_encoder)(\.|$)"),
     "EMA branch and projection heads of pre-training"),
    (re.compile(r"^(head|head_dist|pre_logits)(\.|$)"), "classification / projection head (jobs train a fresh one)"),
    (re.compile(r"^(lm_head|cls_pt_layers|cls_pt_norm)(\.|$)"), "BEiT pre-training heads"),
    (re.compile(r"(^|\.)relative_position_index$"), "relative position index (a constant the model recomputes)"),
)
_DROP_CLIP = (
    (re.compile(r"^(transformer\.|token_embedding\.|positional_embedding$|ln_final\.|text_projection$|"
                r"logit_scale$|logit_bias$|attn_mask$|text\.)"), "CLIP text tower"),
    (re.compile(r"^(input_resolution|context_length|vocab_size)$"), "OpenAI CLIP metadata scalars"),
    (re.compile(r"^visual\.proj$"), "CLIP image projection into the joint embedding space"),
)


def refuse_text(path: Path) -> None:
    """A text file given as a checkpoint (a config, a list of paths, an HTML error page saved as .pth)
    is named as such, with how it starts, instead of a pickle error."""
    with open(path, "rb") as f:
        head = f.read(4096)
    if not head or b"\0" in head:
        return
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    raise CheckpointError(f"{path}: a text file, not a checkpoint (it starts {first[:80]!r}); give a .pth/.pt/.bin "
                       f"weights file (torch.save), timm:<name> or open_clip:<model>/<tag>")


def read_checkpoint(path: Path, mmap: bool = False) -> Any:
    """The file's object, tensors and plain values only (:func:`maskalign.safe_load.load_weights`).

    MAE-family training files (MaskAlign's official release too) pickle their argparse arguments; a
    Namespace only holds plain values, so it is allowed and nothing else. TorchScript archives (OpenAI's
    original CLIP files) and pickles are refused: they run code when opened.
    """
    if path.is_file():
        refuse_text(path)
    return load_weights(path, allowed=[argparse.Namespace], error=CheckpointError, mmap=mmap)


def unwrap(obj: Any, source: str, report: LoadingReport) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict with prefixes removed, metadata stored in the file) of a loaded checkpoint object."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"{source}: holds no state dict (a {type(obj).__name__})")
    info: dict[str, Any] = {}
    if isinstance(obj.get("meta"), dict):
        info["meta"] = dict(obj["meta"])
    if isinstance(obj.get("arch"), str):
        info["timm_arch"] = obj["arch"]  # timm's train.py stores the model name
    state = obj
    if isinstance(obj.get("teacher"), dict) and isinstance(obj.get("student"), dict):
        state = obj["teacher"]  # DINO's training checkpoint: its evaluations use the teacher
        report.notes.append("DINO training checkpoint: the teacher network is the encoder (DINO evaluates it)")
    else:
        for key in _CONTAINERS:
            if isinstance(obj.get(key), dict):
                state = obj[key]
                break
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{source}: holds no tensors (keys {describe_keys(list(state))})")
    return _strip_prefixes(tensors), info


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in state.items():
        while k.startswith("module."):
            k = k[len("module."):]
        for p in ("encoder.", "backbone."):
            if k.startswith(p):
                k = k[len(p):]
                break
        out[k] = v
    return out


def split_dropped(state: dict[str, torch.Tensor], family: str, report: LoadingReport) -> dict[str, torch.Tensor]:
    """The tensors kept for the encoder; every other one recorded in ``report`` with its reason."""
    rules = (_DROP_CLIP + _DROP_ANY) if family.startswith("clip") else _DROP_ANY
    if family.startswith("dinov2"):
        rules = ((re.compile(r"^mask_token$"), "iBOT mask token (not used by the encoder's forward)"),) + rules
    kept: dict[str, torch.Tensor] = {}
    dropped: dict[str, list[str]] = {}
    for k, v in state.items():
        reason = next((r for p, r in rules if p.search(k)), None)
        if reason is None:
            kept[k] = v
        else:
            dropped.setdefault(reason, []).append(k)
    for reason, keys in dropped.items():
        report.add_dropped(keys, reason)
    return kept


def _expand_shared_rel_pos(state: dict[str, torch.Tensor], report: LoadingReport) -> dict[str, torch.Tensor]:
    """BEiT pre-training shares one relative position table; BEiT's fine-tuning copies it into every block."""
    shared = state.pop("rel_pos_bias.relative_position_bias_table", None)
    if shared is None:
        return state
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    for i in range(depth):
        state[f"blocks.{i}.attn.relative_position_bias_table"] = shared.clone()
    report.notes.append(f"shared relative position table copied into each of the {depth} blocks (BEiT fine-tuning)")
    return state


def to_timm_names(state: dict[str, torch.Tensor], family: str, report: LoadingReport) -> dict[str, torch.Tensor]:
    """Official layouts renamed by timm's converters; ``state`` holds only encoder tensors here."""
    from timm.models.vision_transformer import _convert_dinov2, _convert_openai_clip

    if family.startswith("clip") and "visual.class_embedding" in state:
        report.notes.append("OpenAI/open_clip layout renamed by timm's _convert_openai_clip")
        return _convert_openai_clip(dict(state), None)  # type: ignore[arg-type]  # model is unused there
    if family.startswith("dinov2") and ("register_tokens" in state or any(".mlp.w12." in k for k in state)
                                        or "blocks.0.ls1.gamma" in state):
        converted = _convert_dinov2(dict(state), None)  # type: ignore[arg-type]
        if "register_tokens" in state:
            report.notes.append("DINOv2 registers -> reg_token, [CLS] position folded into cls_token "
                                "(timm's _convert_dinov2)")
        return converted
    if family == "beit":
        return _expand_shared_rel_pos(dict(state), report)
    return dict(state)


def fit_to_model(state: dict[str, torch.Tensor], model: nn.Module, family: str, mae_interpolation: bool
                 ) -> dict[str, torch.Tensor]:
    """The family's timm ``checkpoint_filter_fn``: DeiT III layer-scale names, position tables resampled."""
    if family == "beit":
        from timm.models.beit import checkpoint_filter_fn as beit_filter

        return beit_filter(dict(state), model)
    from timm.models.vision_transformer import checkpoint_filter_fn

    state = dict(state)
    pe = state.get("pos_embed")
    if mae_interpolation and pe is not None and pe.shape != model.pos_embed.shape:
        from maskalign.models.pos_embed import resize_pos_embed

        state["pos_embed"] = resize_pos_embed(pe, tuple(model.patch_embed.grid_size))
    return checkpoint_filter_fn(state, model, adapt_layer_scale=True)


def load_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str, family: str,
                allow_missing: tuple[str, ...] = (), allow_unexpected: tuple[str, ...] = ()) -> list[str]:
    """Load every tensor, exactly; one-line error naming the first keys otherwise. Returns the used keys."""
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).strip().splitlines() if "size mismatch" in ln]
        raise CheckpointError(f"{source}: tensors do not fit the {family} model built for them "
                           f"({(lines[0] if lines else str(e).splitlines()[0])[:200]})") from None
    unexpected = [k for k in unexpected if not k.startswith(allow_unexpected)] if allow_unexpected else unexpected
    missing = [k for k in missing if not k.startswith(allow_missing)] if allow_missing else missing
    if unexpected:
        raise CheckpointError(f"{source}: tensors the loader does not understand ({family} family): "
                           f"{describe_keys(unexpected)}")
    if missing:
        raise CheckpointError(f"{source}: the file lacks tensors of its {family} encoder: {describe_keys(missing)}")
    return [k for k in state if k not in set(unexpected)]
