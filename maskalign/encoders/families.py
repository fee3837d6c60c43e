"""ViT families: which one a state dict is (by its key signature) and the timm model that has its architecture.

Detection works like timm's ``checkpoint_filter_fn`` dispatch, on the file's own key names:

=================  =====================================================  ==================================
family             signature                                              timm model (architecture defaults)
=================  =====================================================  ==================================
``clip``           ``visual.class_embedding`` (OpenAI/open_clip), or       ``vit_base_patch16_clip_224``
                   timm keys with ``norm_pre``                             (``_quickgelu_`` for QuickGELU)
``dinov2``         ``mask_token`` + ``blocks.N.ls1.gamma`` (official), or  ``vit_base_patch14_dinov2``
                   timm keys: layer scale, patch 14, [CLS] in pos-embed
``dinov2_reg``     as above with ``register_tokens`` / ``reg_token``       ``vit_base_patch14_reg4_dinov2``
``beit``           ``relative_position_bias_table`` (BEiT, BEiT v2)        ``beit_base_patch16_224``
``deit3``          ``blocks.N.gamma_1`` (official) or layer scale +        ``deit3_base_patch16_224``
                   pos-embed without [CLS] (timm)
``deit_distilled`` ``dist_token``                                          ``deit_base_distilled_patch16_224``
``vit``            plain timm ViT keys (MAE, CrossMAE, LUT, MaskAlign,     ``vit_base_patch16_224``
                   DINO, DeiT, this project, other timm ViTs)
=================  =====================================================  ==================================

The timm model named there carries what no tensor says (LayerNorm eps, activation, layer-scale
init); the widths, depth, patch, grid, register count and the presence of each optional part
(layer scale, pre-norm, qkv bias, qk-norm, class token) are read from the tensors, so any size of
the family is built. What the tensors cannot give -- the head count (known only for the published widths; any other
width needs it stated), CLIP's activation -- comes from the file's metadata or the spec's
options. A family no timm model here expresses (EVA's rotary embeddings, ...) is refused.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import torch

from maskalign.encoders.source_spec import CheckpointError


@dataclass(frozen=True)
class Family:
    """A ViT family: its name in records (labels: ``label.FAMILY_LABELS``) and the timm model of its architecture."""

    name: str
    base: str


FAMILIES = {f.name: f for f in (
    Family("vit", "vit_base_patch16_224"),
    Family("dinov2", "vit_base_patch14_dinov2"),
    Family("dinov2_reg", "vit_base_patch14_reg4_dinov2"),
    Family("clip", "vit_base_patch16_clip_224"),
    Family("clip_quickgelu", "vit_base_patch16_clip_quickgelu_224"),
    Family("deit3", "deit3_base_patch16_224"),
    Family("deit_distilled", "deit_base_distilled_patch16_224"),
    Family("beit", "beit_base_patch16_224"),
)}
SWIGLU_BASE = "vit_giant_patch14_dinov2"  # DINOv2-g: SwiGLU MLP (``mlp.w12``/``w3``)

# Families timm has but this loader does not build; each refused with the feature it lacks here.
_UNSUPPORTED = (
    (re.compile(r"(^|\.)rope\.|\.attn\.rope|freqs_(cos|sin)"), "EVA-style rotary position embeddings"),
    (re.compile(r"\.mlp\.w1\.|\.mlp\.ffn_ln\."), "EVA-style SwiGLU / sub-LN MLP"),
    (re.compile(r"^(layers|stages)\.\d+\."), "a hierarchical (Swin / ConvNeXt-style) backbone"),
    (re.compile(r"^visual\.trunk\."), "an open_clip tower with a timm trunk (load its timm name with timm:)"),
    (re.compile(r"^visual\.attn_pool\."), "CoCa's attentional pooler"),
)
# Widths whose published towers do not use 64-channel heads (ViT-H 1280/16, g 1408/16, bigG 1664/16).
_HEADS_BY_WIDTH = {1280: 16, 1408: 16, 1664: 16, 1536: 24}


def detect(keys: set[str], source: str) -> str:
    """The family of a (prefix-stripped) state dict, by key signature; one-line error if none."""
    for pattern, feature in _UNSUPPORTED:
        hit = next((k for k in sorted(keys) if pattern.search(k)), None)
        if hit is not None:
            raise CheckpointError(f"{source}: unsupported family: {feature} ({hit}); no exact timm model is built "
                               f"for it here")
    if "visual.class_embedding" in keys:
        return "clip"
    if "patch_embed.proj.weight" not in keys or not any(k.startswith("blocks.") for k in keys):
        first = ", ".join(sorted(keys)[:4])
        raise CheckpointError(f"{source}: unknown family: no ViT encoder weights found (expected patch_embed.proj.*, "
                           f"blocks.* or CLIP's visual.*; the file starts with {first or 'nothing'})")
    if any(".relative_position_bias_table" in k for k in keys):
        return "beit"
    if "dist_token" in keys:
        return "deit_distilled"
    if "norm_pre.weight" in keys:
        return "clip"
    if "register_tokens" in keys or ("mask_token" in keys and "blocks.0.ls1.gamma" in keys):
        return "dinov2_reg" if "register_tokens" in keys else "dinov2"
    if "blocks.0.gamma_1" in keys:
        return "deit3"
    if "blocks.0.ls1.gamma" in keys:
        return "timm_layer_scale"  # resolved from the converted tensors by :func:`resolve_layer_scale`
    return "vit"


def _square(n: int) -> int | None:
    r = math.isqrt(max(n, 0))
    return r if r > 0 and r * r == n else None


def _pos_layout(state: dict[str, torch.Tensor]) -> tuple[int | None, bool]:
    """(grid side, no_embed_class) of a timm-keyed state's ``pos_embed``."""
    if "pos_embed" not in state:
        return None, False
    n = state["pos_embed"].shape[1]
    prefix = (int("cls_token" in state) + int("dist_token" in state)
              + (state["reg_token"].shape[1] if "reg_token" in state else 0))
    if prefix and _square(n - prefix):
        return _square(n - prefix), False
    if _square(n):
        return _square(n), True
    raise CheckpointError(f"pos_embed has {n} rows: neither a square grid nor a grid plus {prefix} prefix tokens")


def resolve_layer_scale(state: dict[str, torch.Tensor]) -> str:
    """A timm-keyed ViT with layer scale: DINOv2 (patch 14, [CLS] in pos-embed) or DeiT III (16, not)."""
    _, no_embed_class = _pos_layout(state)
    patch = state["patch_embed.proj.weight"].shape[-1]
    if "reg_token" in state:
        return "dinov2_reg"
    if patch == 14 and not no_embed_class:
        return "dinov2"
    if no_embed_class:
        return "deit3"
    return "vit"


def _mlp_ratio(dim: int, hidden: int) -> float:
    r = hidden / dim
    return r if int(dim * r) == hidden else (hidden + 0.5) / dim  # survive float rounding in timm's int()


def head_count(dim: int, given: int | None, source: str) -> int:
    """The head count: given (spec option, metadata), else the convention of a published width;
    no guess for any other width (the head count is stored in no tensor)."""
    from maskalign.checkpoint import STANDARD_HEADS

    heads = given or _HEADS_BY_WIDTH.get(dim) or STANDARD_HEADS.get(dim)
    if heads is None:
        raise CheckpointError(f"{source}: width {dim} is not a published ViT width "
                           f"({sorted({**STANDARD_HEADS, **_HEADS_BY_WIDTH})}) and nothing states its head count; "
                           f"give it as the spec option '#num_heads=N' or in a .json sidecar")
    if dim % heads:
        raise CheckpointError(f"{source}: {heads} heads do not divide width {dim}; give num_heads (spec option "
                           f"'#num_heads=N')")
    return heads


def model_kwargs(family: str, state: dict[str, torch.Tensor], num_heads: int | None, source: str
                 ) -> tuple[str, dict[str, Any], int]:
    """(timm base model, kwargs that give it this state's sizes and parts, native image size)."""
    w = state["patch_embed.proj.weight"]
    dim, patch = int(w.shape[0]), int(w.shape[-1])
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    hidden = int(state["blocks.0.mlp.fc1.weight"].shape[0])
    kw: dict[str, Any] = {"patch_size": patch, "embed_dim": dim, "depth": depth,
                          "num_heads": head_count(dim, num_heads, source), "mlp_ratio": _mlp_ratio(dim, hidden)}
    base = FAMILIES[family].base
    if family == "beit":
        table = next(v for k, v in state.items() if k.endswith("relative_position_bias_table"))
        grid = _square(table.shape[0] - 3)
        side = (grid + 1) // 2 if grid else None
        if side is None:
            raise CheckpointError(f"{source}: relative_position_bias_table of {table.shape[0]} rows fits no window")
        kw.update(use_abs_pos_emb="pos_embed" in state, use_rel_pos_bias="blocks.0.attn.relative_position_bias_table"
                  in state, use_shared_rel_pos_bias=False, qkv_bias="blocks.0.attn.q_bias" in state,
                  init_values=0.1 if "blocks.0.gamma_1" in state else None,
                  # BEiT's pre-training keeps a final norm; its fine-tuned files pool and use fc_norm
                  global_pool="avg" if "fc_norm.weight" in state and "norm.weight" not in state else "token")
        return base, kw, side * patch
    grid, no_embed_class = _pos_layout(state)
    if grid is None:
        raise CheckpointError(f"{source}: no pos_embed: a ViT without absolute position embeddings is not a "
                           f"family this loader knows")
    kw.update(class_token="cls_token" in state, no_embed_class=no_embed_class,
              reg_tokens=int(state["reg_token"].shape[1]) if "reg_token" in state else 0,
              init_values=1e-5 if "blocks.0.ls1.gamma" in state else None,
              pre_norm="norm_pre.weight" in state, qkv_bias="blocks.0.attn.qkv.bias" in state,
              qk_norm="blocks.0.attn.q_norm.weight" in state)
    if "norm.weight" not in state and "fc_norm.weight" in state:  # a global-pool classifier's encoder
        kw.update(global_pool="avg", fc_norm=True)
    elif not kw["class_token"]:
        kw["global_pool"] = "avg"
    if family.startswith("dinov2") and "blocks.0.mlp.fc2.weight" in state \
            and state["blocks.0.mlp.fc2.weight"].shape[1] * 2 == hidden:
        base = SWIGLU_BASE  # SwiGLU packs gate and value into fc1: fc2 takes half its width
    if family == "deit_distilled":
        kw.pop("reg_tokens")
        kw.pop("no_embed_class")
    return base, kw, grid * patch


_PLAIN_KEY = re.compile(r"^(cls_token|pos_embed|patch_embed\.proj\.(weight|bias)|norm\.(weight|bias)|"
                        r"blocks\.\d+\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias))$")


def is_plain_vit(state: dict[str, torch.Tensor], family: str) -> bool:
    """An MAE-style ViT ([CLS] in the position table, qkv bias, no layer scale, registers or pre-norm):
    what detectron2's and mmseg's own ViTs express exactly."""
    pe = state.get("pos_embed")
    return (family == "vit" and pe is not None and "cls_token" in state and _square(pe.shape[1] - 1) is not None
            and "blocks.0.attn.qkv.bias" in state and all(_PLAIN_KEY.match(k) for k in state))


_SIZE_WORDS = ("tiny", "small", "base", "large", "huge", "giant", "gigantic")
_SIZE_BY_WIDTH = {192: "tiny", 384: "small", 768: "base", 1024: "large", 1280: "huge", 1408: "giant"}


def built_timm_name(arch: dict) -> str:
    """The name of the timm model that was built: the family's model at the encoder's size and patch
    (``vit_small_patch16_224`` for a 384-wide patch-16 ViT built from ``vit_base_patch16_224``'s
    defaults), when timm has that name; else the base model with the sizes that differ from it."""
    import timm

    base = str(arch["timm_model"])
    size = _SIZE_BY_WIDTH.get(int(arch["embed_dim"]))
    sized = base
    if size:
        sized = re.sub(r"(?<=_)(" + "|".join(_SIZE_WORDS) + r")(?=_)", size, sized, count=1)
    exact = re.sub(r"patch\d+", f"patch{int(arch['patch_size'])}", sized, count=1)
    sizes = f"width {arch['embed_dim']}, depth {arch['depth']}, heads {arch['num_heads']}, patch {arch['patch_size']}"
    if timm.is_model(exact):
        return exact
    if size and timm.is_model(sized):
        return f"{sized} at {sizes}"
    return f"{base} at {sizes}"
