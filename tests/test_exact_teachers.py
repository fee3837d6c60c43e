"""The teachers of the shipped MaskAlign recipes against the libraries' own forward and attention.

Each teacher is built from its recipe's ``teacher:`` section (random weights: nothing can be
downloaded), every weight moved off its initial value, and compared with what open_clip / timm
compute themselves: ``forward_intermediates`` (raw block outputs, no final norm, no projection)
and the last block's attention weights from the library's own attention module, [CLS] row,
averaged over heads. The input follows the official MaskAlign code: undo ImageNet normalisation,
apply the teacher's, and for CLIP-L/14 resize the image bicubically to 196 px and the position
table from 16x16 to 14x14 (``F.interpolate``, bicubic, ``align_corners=False``).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

from maskalign.config import config_dir, load_config
from maskalign.teachers import build_teacher

CONFIGS = config_dir("pretrain")
IMNET_MEAN, IMNET_STD = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
CLIP_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073])
CLIP_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711])
LEVELS = [0, 5, 11]


def _teacher_cfg(recipe: str) -> Any:
    return load_config(CONFIGS / recipe, ["teacher.pretrained=null"], CONFIGS)


def _perturb(module: torch.nn.Module, skip: tuple[str, ...] = ()) -> None:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if not name.endswith(skip):
                p.add_(torch.randn(p.shape, generator=g) * 0.05)


def _renorm(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, size: int | None) -> torch.Tensor:
    """The official order: resize the ImageNet-normalised tensor, then denormalise and renormalise."""
    if size is not None:
        images = F.interpolate(images, (size, size), mode="bicubic", align_corners=False)
    x = images * IMNET_STD.view(1, 3, 1, 1) + IMNET_MEAN.view(1, 3, 1, 1)
    return (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)


def _check_open_clip(recipe: str, name: str, size: int, levels: list[int]) -> None:
    import open_clip

    cfg = _teacher_cfg(recipe)
    torch.manual_seed(0)
    teacher = build_teacher(cfg.teacher, cfg.student.img_size)
    torch.manual_seed(0)
    ref = open_clip.create_model(name, pretrained=None).visual.eval()  # the same random weights
    original_pos = ref.positional_embedding.detach().clone()
    _perturb(ref, skip=("positional_embedding",))
    own = teacher.visual.state_dict()
    teacher.visual.load_state_dict({k: v for k, v in ref.state_dict().items() if k != "positional_embedding"}
                                   | {"positional_embedding": own["positional_embedding"]})
    grid = size // ref.patch_size[0]
    if tuple(ref.grid_size) != (grid, grid):  # CLIP-L/14*: resize the table as the official code does
        g0, d = ref.grid_size[0], original_pos.shape[-1]
        tab = original_pos[1:].reshape(1, g0, g0, d).permute(0, 3, 1, 2)
        tab = F.interpolate(tab, (grid, grid), mode="bicubic", align_corners=False)
        ref.positional_embedding = torch.nn.Parameter(
            torch.cat([original_pos[:1], tab.permute(0, 2, 3, 1).reshape(grid * grid, d)]))
        ref.grid_size = (grid, grid)
    images = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    out = teacher(images, levels, with_attn=True)
    x = _renorm(images, CLIP_MEAN, CLIP_STD, size if size != 224 else None)
    captured: list[torch.Tensor] = []
    last = ref.transformer.resblocks[-1]
    hook = last.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    with torch.no_grad():
        inter = ref.forward_intermediates(x, indices=levels, output_fmt="NLC", output_extra_tokens=True,
                                          intermediates_only=True)
        hook.remove()
        h = last.ln_1(captured[0])
        _, weights = last.attn(h, h, h, need_weights=True, average_attn_weights=True)
    for lvl, prefix, patches in zip(levels, inter["image_intermediates_prefix"], inter["image_intermediates"]):
        want = torch.cat([prefix, patches], dim=1)
        assert out.hidden[lvl].shape == (1, 1 + grid * grid, ref.transformer.width)
        # 24 blocks of float32 in a different operation order (resize, then renormalise): ~1e-4.
        torch.testing.assert_close(out.hidden[lvl], want, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(out.cls_attn, weights[:, 0, 1:], rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_open_clip_vit_b16_teacher_equals_open_clip() -> None:
    _check_open_clip("maskalign_vitb16_clipb16_200ep.yaml", "ViT-B-16", 224, LEVELS)


@pytest.mark.slow
def test_open_clip_vit_l14_at_196_equals_open_clip_with_the_official_resize() -> None:
    _check_open_clip("maskalign_vitb16_clipl14_200ep.yaml", "ViT-L-14", 196, [0, 11, 23])


@pytest.mark.slow
def test_timm_dino_teacher_equals_timm() -> None:
    import timm

    cfg = _teacher_cfg("maskalign_vitb16_dinob16_200ep.yaml")
    teacher = build_teacher(cfg.teacher, cfg.student.img_size)
    _perturb(teacher.model)
    ref = timm.create_model("vit_base_patch16_224.dino", pretrained=False, num_classes=0).eval()
    ref.load_state_dict(teacher.model.state_dict())
    images = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    out = teacher(images, LEVELS, with_attn=True)
    attn = ref.blocks[-1].attn
    attn.fused_attn = False  # timm's slow path passes the softmaxed weights through attn_drop
    seen: list[torch.Tensor] = []
    attn.attn_drop.register_forward_hook(lambda _m, _i, o: seen.append(o))
    with torch.no_grad():  # a list of (patch tokens, [CLS]) per level
        inter = ref.forward_intermediates(_renorm(images, IMNET_MEAN, IMNET_STD, None), indices=LEVELS,
                                          norm=False, output_fmt="NLC", return_prefix_tokens=True,
                                          intermediates_only=True)
    for lvl, (p, c) in zip(LEVELS, inter):
        torch.testing.assert_close(out.hidden[lvl], torch.cat([c, p], dim=1), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.cls_attn, seen[-1].mean(1)[:, 0, 1:], rtol=1e-4, atol=1e-6)
