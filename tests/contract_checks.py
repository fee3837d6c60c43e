"""The contract every registered objective and teacher must keep, as reusable checks.

``tests/test_registry_contract.py`` runs them over everything registered (timm's test-every-model
habit); a test that registers its own objective (``tests/test_toy_objective.py``) runs them on it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from maskalign.config import config_dir, load_config
from maskalign.objectives import Objective, build_objective, objective_class
from maskalign.teachers import Teacher

CONFIG_DIR = config_dir("pretrain")
BATCH, IMG = 2, 32

# One tiny setting for every objective: keys a method does not read are harmless.
TINY = [
    "student.arch=vit_tiny_demo", f"student.img_size={IMG}", "student.patch_size=8", "student.drop_path=0.0",
    "mae.decoder_dim=32", "mae.decoder_depth=1", "mae.decoder_heads=2",
    "crossmae.decoder_dim=32", "crossmae.decoder_depth=1", "crossmae.decoder_heads=2",
    "lut.mlp_dim=64", "align.top_k=2", "data.num_workers=0",
]


def tiny_config(method: str, teacher_ckpt: Path, *extra: str) -> Any:
    """A resolved config for ``method`` at toy size: a local random-weight ViT teacher for the
    objectives that declare ``uses_teacher``, none (and random masking) for the others."""
    cls = objective_class(method)
    teacher = (["teacher.backend=local", f"teacher.checkpoint={teacher_ckpt}"] if cls.uses_teacher
               else ["teacher.backend=none", "mask.type=random"])
    return load_config(None, [f"method={method}", *TINY, *teacher, *extra], CONFIG_DIR)


def images_for(obj: Objective, seed: int = 0) -> torch.Tensor | list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    views = [torch.randn(BATCH, 3, IMG, IMG, generator=g) for _ in range(obj.num_views)]
    return views if obj.num_views > 1 else views[0]


def check_objective_contract(obj: Objective, cfg: Any) -> None:
    """Forward + backward on a 2-image batch, every declared hook of the declared type, and an
    exported encoder that *is* the student: timm's ViT with those weights computes what it computes."""
    from maskalign.checkpoint import build_timm_vit

    cls = type(obj)
    assert isinstance(obj, Objective) and obj.name == cfg.method
    # declarations
    labels = cls.method_labels()
    assert isinstance(cls.label, str) and cls.label and labels[obj.name] == cls.label
    assert all(isinstance(k, str) and isinstance(v, str) and v for k, v in labels.items())
    assert isinstance(obj.num_views, int) and obj.num_views >= 1
    assert isinstance(obj.find_unused_parameters, bool) and isinstance(cls.uses_teacher, bool)
    assert set(cls.recipes) <= set(labels), "a recipe for a method id the objective does not label"
    for recipe in cls.recipes.values():  # the speed benchmark builds these
        assert load_config(recipe, [], CONFIG_DIR).method == obj.name
    # what records and tables read
    assert isinstance(obj.method_id, str) and obj.method_id in labels
    for ratio in (obj.forward_ratio, obj.reconstruct_ratio):
        assert isinstance(ratio, float) and 0.0 <= ratio <= 1.0
    assert isinstance(obj.supervision, str) and obj.supervision
    lr = obj.lr_multiplier
    assert isinstance(lr, float) and lr > 0
    names = {n for n, _ in obj.named_parameters()}
    skip = obj.no_weight_decay()
    assert isinstance(skip, set) and skip <= names
    # the training transform: a PIL image in, num_views tensors at the student's size out
    tf = obj.train_transform(cfg)
    if tf is not None:
        img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8))
        out = tf(img)
        views = out if obj.num_views > 1 else [out]
        assert len(views) == obj.num_views and all(v.shape == (3, IMG, IMG) for v in views)
    else:
        assert obj.num_views == 1, "several views need a train_transform that makes them"

    # forward and backward
    obj.train()
    result = obj(images_for(obj))
    assert result.loss.ndim == 0 and torch.isfinite(result.loss)
    assert all(v.ndim == 0 and not v.requires_grad for v in result.metrics.values())
    result.loss.backward()
    enc = {n: p for n, p in obj.encoder.named_parameters() if p.requires_grad}
    reached = {n for n, p in enc.items() if p.grad is not None and p.grad.abs().sum() > 0}
    assert "patch_embed.proj.weight" in reached and any(n.startswith(f"blocks.{obj.encoder.depth - 1}.")
                                                        for n in reached)
    if not obj.find_unused_parameters:  # the declaration DDP relies on
        unused = [n for n, p in obj.named_parameters() if p.requires_grad and p.grad is None]
        assert unused == [], f"{obj.name}: {unused[:4]} get no gradient; declare find_unused_parameters"
    assert obj.after_optimizer_step(0.5) is None

    # saved state: no teacher, and it loads back
    saved = obj.state_dict_to_save()
    assert saved and not any(k.startswith("teacher.") for k in saved)
    missing, unexpected = obj.load_state_dict(saved, strict=False)
    assert unexpected == [] and all(k.startswith("teacher.") for k in missing)

    # the exported encoder is the student, in timm's VisionTransformer
    state = obj.encoder_state_dict()
    vit = build_timm_vit(obj.encoder.arch(), state).eval()
    obj.eval()
    x = torch.randn(BATCH, 3, IMG, IMG, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(vit.forward_features(x), obj.encoder(x), rtol=1e-4, atol=1e-5)


def build_and_check(method: str, teacher_ckpt: Path, *extra: str) -> Objective:
    cfg = tiny_config(method, teacher_ckpt, *extra)
    torch.manual_seed(0)
    obj = build_objective(cfg)
    check_objective_contract(obj, cfg)
    return obj


def check_teacher_contract(teacher: Teacher, img: int) -> dict[str, torch.Tensor]:
    """Declared sizes, frozen for good, outputs of the declared shapes; returns the input and attention."""
    assert isinstance(teacher, Teacher)
    assert isinstance(teacher.dim, int) and teacher.dim > 0 and isinstance(teacher.depth, int) and teacher.depth > 0
    assert isinstance(teacher.label, str) and teacher.label
    assert teacher.input_size is None or isinstance(teacher.input_size, int)
    assert all(not p.requires_grad for p in teacher.parameters())
    teacher.train()
    assert not teacher.training
    x = torch.randn(BATCH, 3, img, img, generator=torch.Generator().manual_seed(2))
    levels = sorted({0, teacher.depth - 1})
    out = teacher(x, levels, with_attn=True)
    assert sorted(out.hidden) == levels
    n = out.cls_attn.shape[1]
    for h in out.hidden.values():
        assert h.shape == (BATCH, 1 + n, teacher.dim) and torch.isfinite(h).all() and not h.requires_grad
    a = out.cls_attn
    assert a.shape == (BATCH, n) and (a >= 0).all() and (a.sum(1) <= 1 + 1e-5).all() and (a.sum(1) > 0).all()
    assert teacher(x, levels[-1:], with_attn=False).cls_attn is None
    return {"x": x, "cls_attn": a}
