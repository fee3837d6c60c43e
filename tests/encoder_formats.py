"""Tiny random encoders of each published family, saved in that family's official file layout.

Each writer returns (path, reference): the reference is the family's own implementation holding
the original weights (timm's model, or open_clip's CLIP), so a test compares what the project
loads from the file with what the family computes. The official layouts are written here by hand
from the projects' releases (see shared/reference/ENCODERS.md), not with timm's converters, so a
converter bug cannot cancel itself out. Every weight is moved off its initial value first: a
dropped or swapped tensor (layer scale at 1e-5, LayerNorm at 1/0) then changes the output.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

DIM, HEADS = 64, 2


def perturb(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("gamma", "gamma_1", "gamma_2")):
                p.copy_(0.5 + 0.3 * torch.randn(p.shape, generator=g))
            else:
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


def timm_model(name: str, img_size: int, **kw) -> nn.Module:
    import timm

    kw = {"depth": 2, "embed_dim": DIM, "num_heads": HEADS, "num_classes": 0, **kw}
    return perturb(timm.create_model(name, pretrained=False, img_size=img_size, **kw))


def mae(tmp: Path) -> tuple[Path, nn.Module]:
    """MAE's ``mae_pretrain_vit_*.pth`` / a pre-training checkpoint: ``{"model": encoder + decoder}``."""
    ref = timm_model("vit_base_patch16_224", 32, patch_size=8)
    state = dict(ref.state_dict())
    state.update({"mask_token": torch.zeros(1, 1, 32), "decoder_embed.weight": torch.zeros(32, DIM),
                  "decoder_pos_embed": torch.zeros(1, 17, 32), "decoder_blocks.0.norm1.weight": torch.ones(32),
                  "decoder_norm.weight": torch.ones(32), "decoder_pred.weight": torch.zeros(192, 32)})
    torch.save({"model": state, "epoch": 799}, tmp / "mae_pretrain.pth")
    return tmp / "mae_pretrain.pth", ref


def maskalign_release(tmp: Path) -> tuple[Path, nn.Module]:
    """MaskAlign's ``save_model``: student, CLIP teacher, distill heads, optimizer and argparse args."""
    ref = timm_model("vit_base_patch16_224", 32, patch_size=8)
    state = dict(ref.state_dict())
    state.update({"clip_model.visual.conv1.weight": torch.zeros(8, 3, 4, 4), "clip_model.logit_scale": torch.ones(()),
                  "distill_heads.0.weight": torch.zeros(8, DIM), "distill_weights": torch.ones(2, 2)})
    torch.save({"model": state, "optimizer": {"state": {}, "param_groups": []}, "epoch": 199,
                "args": argparse.Namespace(model="mae_vit_base_patch16", blr=1.5e-4)}, tmp / "maskalign.pth")
    return tmp / "maskalign.pth", ref


def dino(tmp: Path) -> tuple[Path, nn.Module]:
    """DINO's ``dino_vit*_pretrain.pth``: a bare timm-named state dict."""
    ref = timm_model("vit_small_patch16_224", 32, patch_size=8)
    torch.save(dict(ref.state_dict()), tmp / "dino_pretrain.pth")
    return tmp / "dino_pretrain.pth", ref


def dinov2(tmp: Path, registers: int = 0, img_size: int = 56, **kw) -> tuple[Path, nn.Module]:
    """DINOv2's hub file: ``ls*.gamma``, ``mask_token``; with registers ``register_tokens`` and a
    position table that holds the [CLS] row (timm folds it into ``cls_token``)."""
    name = "vit_small_patch14_reg4_dinov2" if registers else "vit_small_patch14_dinov2"
    ref = timm_model(name, img_size, **({"reg_tokens": registers} if registers else {}), **kw)
    sd = dict(ref.state_dict())
    dim = ref.embed_dim
    if registers:
        pos0 = 0.1 * torch.randn(1, 1, dim)
        sd["register_tokens"] = sd.pop("reg_token")
        sd["cls_token"] = sd["cls_token"] - pos0
        sd["pos_embed"] = torch.cat([pos0, sd["pos_embed"]], dim=1)
    sd["mask_token"] = torch.zeros(1, dim)
    path = tmp / f"dinov2{'_reg' if registers else ''}_pretrain.pth"
    torch.save(sd, path)
    return path, ref


def dinov2_giant(tmp: Path) -> tuple[Path, nn.Module]:
    """DINOv2-g's hub file: its SwiGLU MLP stored as ``mlp.w12`` (gate and value) and ``mlp.w3``."""
    ref = timm_model("vit_giant_patch14_dinov2", 56, embed_dim=96)
    sd = {k.replace("mlp.fc1", "mlp.w12").replace("mlp.fc2", "mlp.w3"): v for k, v in ref.state_dict().items()}
    sd["mask_token"] = torch.zeros(1, 96)
    torch.save(sd, tmp / "dinov2_vitg14_pretrain.pth")
    return tmp / "dinov2_vitg14_pretrain.pth", ref


def deit3(tmp: Path, img_size: int = 32, **kw) -> tuple[Path, nn.Module]:
    """DeiT III's release: ``{"model": ...}`` with ``blocks.N.gamma_1/gamma_2`` and the classifier head."""
    ref = timm_model("deit3_small_patch16_224", img_size, **{"patch_size": 8, **kw})
    sd = {k.replace("ls1.gamma", "gamma_1").replace("ls2.gamma", "gamma_2"): v for k, v in ref.state_dict().items()}
    sd.update({"head.weight": torch.zeros(10, ref.embed_dim), "head.bias": torch.zeros(10)})
    torch.save({"model": sd}, tmp / "deit3.pth")
    return tmp / "deit3.pth", ref


def deit_distilled(tmp: Path) -> tuple[Path, nn.Module]:
    """DeiT's distilled release: ``dist_token`` beside ``cls_token``, two heads."""
    ref = timm_model("deit_tiny_distilled_patch16_224", 32, patch_size=8)
    sd = dict(ref.state_dict())
    sd.update({"head.weight": torch.zeros(10, DIM), "head.bias": torch.zeros(10),
               "head_dist.weight": torch.zeros(10, DIM), "head_dist.bias": torch.zeros(10)})
    torch.save({"model": sd}, tmp / "deit_distilled.pth")
    return tmp / "deit_distilled.pth", ref


def beit(tmp: Path, shared: bool = False) -> tuple[Path, nn.Module]:
    """BEiT v2 pre-training file (per-block relative position tables, index buffers, LM head,
    mask token, patch-aggregation layers); ``shared=True``: BEiT's one shared table."""
    kw = {"use_shared_rel_pos_bias": True, "use_rel_pos_bias": False} if shared else {}
    ref = timm_model("beitv2_base_patch16_224", 32, patch_size=8, global_pool="token", **kw)  # final norm kept
    sd = {k: v for k, v in ref.state_dict().items()}
    for name, buf in ref.named_buffers():
        if name.endswith("relative_position_index"):
            sd[name] = buf
    sd.update({"mask_token": torch.zeros(1, 1, DIM), "lm_head.weight": torch.zeros(16, DIM),
               "cls_pt_layers.0.norm1.weight": torch.ones(DIM)})
    torch.save({"model": sd}, tmp / "beit.pth")
    return tmp / "beit.pth", ref


def open_clip_model(quick_gelu: bool = True, image_size: int = 32, layers: int = 2, width: int = DIM,
                    heads: int = HEADS) -> nn.Module:
    import open_clip

    model = open_clip.CLIP(embed_dim=16, quick_gelu=quick_gelu,
                           vision_cfg={"layers": layers, "width": width, "head_width": width // heads, "patch_size": 8,
                                       "image_size": image_size},
                           text_cfg={"context_length": 8, "vocab_size": 50, "width": 32, "heads": 2, "layers": 1})
    return perturb(model)


def clip(tmp: Path, openai: bool = True, **kw) -> tuple[Path, nn.Module]:
    """CLIP weights (``visual.*`` + text tower); OpenAI's state dict also holds three metadata scalars."""
    ref = open_clip_model(quick_gelu=openai, **kw)
    sd = dict(ref.state_dict())
    if openai:
        sd.update({"input_resolution": torch.tensor(32), "context_length": torch.tensor(8),
                   "vocab_size": torch.tensor(50)})
    path = tmp / ("clip_openai.pt" if openai else "clip_laion.pt")
    torch.save(sd, path)
    return path, ref


DEMO = {"embed_dim": 96, "depth": 6, "num_heads": 3, "patch_size": 8}  # the demo configs' ViT (vit_tiny_demo)


def demo_sized(tmp: Path, family: str) -> str:
    """A spec for a ``family`` checkpoint with the demo configs' ViT sizes at 64 px, in its official layout."""
    tmp.mkdir(parents=True, exist_ok=True)
    if family == "dinov2_reg":
        path, _ = dinov2(tmp, registers=4, img_size=64, **DEMO)
    elif family == "clip":
        path, _ = clip(tmp, openai=True, image_size=64, layers=6, width=96, heads=3)
    elif family == "deit3":
        path, _ = deit3(tmp, img_size=64, **DEMO)
    else:
        raise ValueError(family)
    return f"{path}#num_heads=3"
