"""[CLS]-to-patch attention of the last block, averaged over heads, as in the paper's Figure 3.

The checkpoints are whatever :func:`maskalign.checkpoint.load_encoder_state` reads (encoder exports
in timm ``VisionTransformer`` key names with a sidecar ``<stem>.json`` holding ``{"arch": {...}}``,
training checkpoints, MAE-family files), built by :func:`maskalign.checkpoint.build_timm_vit`.
Without a sidecar the architecture is read off the tensor shapes (heads = embed_dim // 64).
timm's fused attention does not return its weights, so the last block's attention is recomputed
from its ``qkv`` projection: the input of ``blocks[-1].attn`` is captured with a forward pre-hook.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from timm.models.vision_transformer import VisionTransformer

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


@dataclass
class Encoder:
    model: VisionTransformer
    arch: dict
    label: str
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


def load_encoder(path: str | Path, label: str | None = None) -> Encoder:
    """A timm ViT (``num_classes=0``) from any encoder file :mod:`maskalign.checkpoint` reads."""
    from maskalign.checkpoint import build_timm_vit, infer_arch, load_encoder_state

    path = Path(path)
    state, meta = load_encoder_state(path)
    # Neither a sidecar nor a training checkpoint's own metadata (which names its run): inferred.
    if not path.with_suffix(".json").is_file() and not meta.get("run"):
        print(f"{path}: no sidecar {path.with_suffix('.json').name}; architecture inferred from tensor "
              f"shapes (num_heads={meta['arch']['num_heads']})", file=sys.stderr)
    # A sidecar may state only part of the arch; the tensors fill in the rest.
    arch = dict(meta["arch"])
    if {"img_size", "patch_size", "embed_dim", "depth", "num_heads"} - arch.keys():
        arch = {**infer_arch(state, str(path)), **arch}
    model = build_timm_vit(arch, state).eval()
    mean = tuple(meta.get("mean", IMAGENET_MEAN))
    std = tuple(meta.get("std", IMAGENET_STD))
    # this project's exports are all called encoder.pth: name them after their run (or folder)
    default = path.stem if path.stem != "encoder" else (meta.get("run") or path.parent.name)
    return Encoder(model, arch, label or meta.get("label") or str(default), mean, std)


@torch.no_grad()
def cls_attention(model: VisionTransformer, images: torch.Tensor) -> torch.Tensor:
    """(B, gh, gw): the last block's [CLS]->patch attention, softmaxed per head, mean over heads."""
    attn = model.blocks[-1].attn
    captured: list[torch.Tensor] = []
    handle = attn.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    try:
        model.forward_features(images)
    finally:
        handle.remove()
    x = captured[0]
    b, n, _ = x.shape
    qkv = attn.qkv(x).reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
    weights = ((q[:, :, :1] * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)  # (B, H, 1, N)
    cls_to_patch = weights[:, :, 0, model.num_prefix_tokens :].mean(dim=1)
    gh, gw = model.patch_embed.grid_size
    return cls_to_patch.reshape(b, gh, gw)


def center_crop(image: Image.Image, size: int) -> Image.Image:
    w, h = image.size
    scale = size / min(w, h)
    image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
    w, h = image.size
    left, top = (w - size) // 2, (h - size) // 2
    return image.crop((left, top, left + size, top + size))


def load_images(directory: str | Path, n: int) -> list[Image.Image]:
    paths = sorted(p for p in Path(directory).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise FileNotFoundError(f"{directory}: no .jpg/.jpeg/.png images")
    return [Image.open(p).convert("RGB") for p in paths[:n]]


def demo_images(n: int, size: int = 224, seed: int = 0) -> list[Image.Image]:
    """The default images: from the demo world, object-centric first, then multi-object scenes
    (as Figure 3 puts object-centric images left and complex scenes right). Falls back to
    :func:`synthetic_images` where the demo world is not importable."""
    try:
        from maskalign.data.demo_world import (
            NUM_CLASSES,
            image_rng,
            render_classification_image,
            render_scene,
        )
    except ImportError:
        return synthetic_images(n, size, seed)
    n_objects = (n + 1) // 2
    out = []
    for i in range(n):
        rng = image_rng(seed, "figures/attention", i)
        if i < n_objects:
            arr = render_classification_image(rng, size, i % NUM_CLASSES)
        else:
            arr = render_scene(rng, size, 4)[0]
        out.append(Image.fromarray(arr))
    return out


def synthetic_images(n: int, size: int = 224, seed: int = 0) -> list[Image.Image]:
    """Stand-ins without the demo world: a bright blob or two on a smooth coloured background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        coarse = Image.fromarray((rng.uniform(0.1, 0.5, (4, 4, 3)) * 255).astype(np.uint8))
        img = np.asarray(coarse.resize((size, size), Image.BICUBIC), dtype=np.float64) / 255.0
        for _ in range(int(rng.integers(1, 3))):
            cy, cx, r = rng.uniform(0.25, 0.75), rng.uniform(0.25, 0.75), rng.uniform(0.1, 0.25)
            blob = ((yy - cy) ** 2 + (xx - cx) ** 2) < r * r
            img[blob] = rng.uniform(0.4, 1.0, size=3)
        out.append(Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)))
    return out


def to_tensor(images: list[Image.Image], size: int, mean: tuple, std: tuple) -> torch.Tensor:
    arr = np.stack([np.asarray(center_crop(im, size), dtype=np.float32) / 255.0 for im in images])
    x = torch.from_numpy(arr).permute(0, 3, 1, 2)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def attention_maps(encoders: list[Encoder], images: list[Image.Image]) -> list[np.ndarray]:
    """Per encoder, (B, gh, gw) attention maps, each at the encoder's own input size."""
    maps = []
    for enc in encoders:
        x = to_tensor(images, int(enc.arch["img_size"]), enc.mean, enc.std)
        maps.append(cls_attention(enc.model, x).numpy())
    return maps


def render(
    images: list[Image.Image],
    encoders: list[Encoder],
    maps: list[np.ndarray],
    out: str | Path,
    cell_inches: float = 2.0,
    dpi: int = 100,
) -> Path:
    """A grid: one row per image, the image then one attention overlay per checkpoint."""
    from matplotlib.figure import Figure

    from maskalign.results.figures import save_png

    rows, cols = len(images), 1 + len(encoders)
    fig = Figure(figsize=(cols * cell_inches, rows * cell_inches))
    axes = fig.subplots(rows, cols, squeeze=False)
    show = 224
    for i, image in enumerate(images):
        base = np.asarray(center_crop(image, show), dtype=np.float32) / 255.0
        axes[i, 0].imshow(base)
        if i == 0:
            axes[i, 0].set_title("image", fontsize=9)
        for j, (enc, m) in enumerate(zip(encoders, maps), start=1):
            a = torch.from_numpy(m[i])[None, None]
            a = torch.nn.functional.interpolate(a, size=(show, show), mode="bilinear", align_corners=False)[
                0, 0
            ]
            a = (a - a.min()) / (a.max() - a.min() + 1e-12)
            axes[i, j].imshow(base)
            axes[i, j].imshow(a.numpy(), cmap="jet", alpha=0.55, vmin=0.0, vmax=1.0)
            if i == 0:
                axes[i, j].set_title(enc.label, fontsize=9)
    for ax in axes.flat:
        ax.set_axis_off()
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.93, wspace=0.03, hspace=0.03)
    return save_png(fig, out, dpi)
