"""What an encoder not pre-trained here was trained *by*, where its file or name says so.

Tables label a row by method and supervision; a published file carries no metadata, but its
leftover keys, its file name or its hub tag often say how it was trained: an MAE pre-training file
still holds its decoder, MaskAlign's release its CLIP teacher and distillation heads, CrossMAE's
its cross-attention decoder, LUT's its EMA encoder and predictor; timm tags name the recipe
(``.mae``, ``.dino``, ``.augreg_in21k``). The family says the rest (DeiT III: supervised, DINOv2:
self-supervised, CLIP: image-text). Nothing is guessed beyond that: an unknown file stays
``external`` with no method.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

#: method -> its supervision, in the records' terms (``pixel`` prints as "RGB").
METHOD_SUPERVISION = {"mae": "pixel", "crossmae": "pixel", "lut": "pixel", "maskalign": "CLIP",
                      "dino": "self-supervised", "beit": "self-supervised"}
FAMILY_SUPERVISION = {"deit3": "supervised", "deit_distilled": "supervised", "dinov2": "self-supervised",
                      "dinov2_reg": "self-supervised", "clip": "image-text", "clip_quickgelu": "image-text",
                      "beit": "self-supervised"}
# Leftover keys of a pre-training file, most specific first.
_KEY_SIGNATURES = (
    (re.compile(r"^(clip_model|teacher)\.|^distill_heads\.|^distill_weights$"), "maskalign"),
    (re.compile(r"^decoder_blocks\.\d+\.(cross_attn|cross_attention)\.|^dec_norm|^wfm"), "crossmae"),
    (re.compile(r"^(ema_encoder|target_encoder|momentum_encoder)\.|^predictor\."), "lut"),
    (re.compile(r"^decoder_(embed|pred|pos_embed|blocks|norm)"), "mae"),
)
_NAME_WORDS = ("maskalign", "crossmae", "lut", "mae", "dino")
_SUPERVISED_TAGS = re.compile(r"(augreg|in1k|in21k|in22k|fb_in|tv_in|sam_in|orig_in)")


def _from_name(name: str) -> str | None:
    words = set(re.split(r"[^a-z0-9]+", name.lower()))
    return next((w for w in _NAME_WORDS if w in words), None)


def recognise(keys: Iterable[str], family: str, file: str | Path | None = None,
              hub: str | None = None) -> dict[str, str]:
    """``{"pretraining": method, "supervision": ...}`` as far as keys, name and family say (may be empty)."""
    keys = list(keys)
    method = next((m for p, m in _KEY_SIGNATURES if any(p.search(k) for k in keys)), None)
    if method is None and file is not None:
        method = _from_name(Path(file).name)
    if method is None and hub:
        tag = hub.split(".", 1)[1] if "." in hub else ""
        method = _from_name(tag) if tag else None
        if method is None and _SUPERVISED_TAGS.search(tag) and not family.startswith("clip"):
            return {"supervision": "supervised"}
    out: dict[str, str] = {}
    if method is not None:
        out["pretraining"] = method
        out["supervision"] = METHOD_SUPERVISION.get(method, "self-supervised")
    elif family in FAMILY_SUPERVISION:
        out["supervision"] = FAMILY_SUPERVISION[family]
    return out
