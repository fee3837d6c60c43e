"""Every registered objective and teacher backend through one contract, on tiny inputs.

As timm's ``test_models.py`` runs every registered model: a method or backend added to the
registries is tested here without a line of its own, except that a teacher backend needs a tiny
offline configuration in ``TEACHER_CASES`` (the test says so when one is missing).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from contract_checks import build_and_check, check_teacher_contract
from objective_fixtures import export_random_teacher
from omegaconf import OmegaConf

from maskalign.config import ConfigError
from maskalign.objectives import (
    OBJECTIVES,
    Objective,
    ObjectiveOutput,
    method_labels,
    register_objective,
    registered_objectives,
)
from maskalign.objectives.base import REQUIRED_HOOKS
from maskalign.teachers import TEACHERS, build_teacher, register_teacher, registered_teachers, teacher_depth

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may download
BUILT_IN_OBJECTIVES = ["maskalign", "mae", "crossmae", "lut"]
BUILT_IN_TEACHERS = ["none", "open_clip", "timm", "local", "demo"]


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_random_teacher(tmp_path_factory.mktemp("teacher"), depth=3, dim=32, img=32)


def test_importing_the_packages_registers_every_built_in() -> None:
    assert list(registered_objectives())[:4] == BUILT_IN_OBJECTIVES
    assert set(BUILT_IN_TEACHERS) <= set(TEACHERS)
    labels = method_labels()
    assert {k: labels[k] for k in ("maskalign", "fd", "mae", "crossmae", "lut")} == {
        "maskalign": "MaskAlign", "fd": "FD", "mae": "MAE", "crossmae": "CrossMAE", "lut": "LUT"}


@pytest.mark.parametrize("method", list(registered_objectives()))
def test_every_registered_objective_keeps_the_contract(method: str, teacher_ckpt: Path) -> None:
    build_and_check(method, teacher_ckpt)


def test_fd_is_maskalign_reporting_its_own_method_id(teacher_ckpt: Path) -> None:
    obj = build_and_check("maskalign", teacher_ckpt, "mask.ratio=0", "align.type=layerwise", "align.top_k=1")
    assert obj.method_id == "fd" and obj.forward_ratio == 1.0


def test_a_registered_subclass_does_not_inherit_its_parents_declarations() -> None:
    lut, mae = OBJECTIVES["lut"], OBJECTIVES["mae"]
    assert issubclass(lut, mae)
    assert (lut.name, lut.label, lut.recipes) == ("lut", "LUT", {"lut": "lut_vitb16_1600ep"})
    assert (mae.name, mae.label) == ("mae", "MAE")


def test_registration_refuses_an_incomplete_class_or_a_taken_name() -> None:
    class NoRatios(Objective):
        def forward(self, images: torch.Tensor) -> ObjectiveOutput:
            return ObjectiveOutput(images.sum())

        @classmethod
        def from_config(cls, cfg: object) -> Objective:
            return cls()

    with pytest.raises(TypeError, match="forward_ratio, reconstruct_ratio, supervision"):
        register_objective("no_ratios")(NoRatios)
    assert set(REQUIRED_HOOKS) >= {"forward", "from_config"}
    with pytest.raises(TypeError, match="not an Objective"):
        register_objective("plain")(torch.nn.Linear)

    class Impostor(OBJECTIVES["mae"]):  # complete (inherits MAE's hooks) but under a taken name
        pass

    with pytest.raises(ValueError, match="already registered"):
        register_objective("mae")(Impostor)
    assert "no_ratios" not in OBJECTIVES and OBJECTIVES["mae"].__name__ == "MAE"


# --- teachers -----------------------------------------------------------------------------------
TINY_OPEN_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
}


def _timm_probs(teacher: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Head-mean attention of the last block from timm's own (unfused) attention: (B, 1+N, 1+N)."""
    attn = teacher.model.blocks[-1].attn
    attn.fused_attn = False
    got: list[torch.Tensor] = []
    hook = attn.attn_drop.register_forward_hook(lambda _m, _i, out: got.append(out))
    try:
        teacher(x, [0], with_attn=False)
    finally:
        hook.remove()
    return got[0].mean(1)


def _open_clip_probs(teacher: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The same from ``nn.MultiheadAttention`` itself, asked for its (head-averaged) weights."""
    blk = teacher.visual.transformer.resblocks[-1]
    got: list[torch.Tensor] = []
    hook = blk.register_forward_pre_hook(lambda _m, args: got.append(args[0]))
    try:
        teacher(x, [0], with_attn=False)
    finally:
        hook.remove()
    h = blk.ln_1(got[0])
    with torch.no_grad():
        return blk.attn(h, h, h, need_weights=True, average_attn_weights=True)[1]


# backend -> (teacher config, input side, reference [CLS] attention over [CLS] + patches or None)
TEACHER_CASES = {
    "timm": ({"name": "vit_tiny_patch16_224", "pretrained": False}, 224, _timm_probs),
    "local": ({}, 32, _timm_probs),  # the checkpoint is filled in below
    "open_clip": ({"name": "maskalign-test-tiny", "pretrained": None}, 32, _open_clip_probs),
    "demo": ({}, 64, None),
}


def _teacher_cfg(backend: str, teacher_ckpt: Path, tmp_path: Path) -> object:
    base = {"backend": backend, "name": None, "pretrained": None, "checkpoint": None, "input_size": None,
            "label": None}
    if backend == "open_clip":
        import open_clip

        (tmp_path / "maskalign-test-tiny.json").write_text(__import__("json").dumps(TINY_OPEN_CLIP))
        open_clip.add_model_config(tmp_path)
    if backend == "local":
        base["checkpoint"] = str(teacher_ckpt)
    return OmegaConf.create({**base, **TEACHER_CASES[backend][0]})


@pytest.mark.parametrize("backend", list(registered_teachers()))
def test_every_registered_teacher_backend_keeps_the_contract(backend: str, teacher_ckpt: Path,
                                                              tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if backend == "none":
        cfg = OmegaConf.create({"backend": "none"})
        assert build_teacher(cfg, 32) is None and teacher_depth(cfg) is None
        return
    assert backend in TEACHER_CASES, f"teacher backend {backend!r}: add a tiny offline case to TEACHER_CASES"
    if backend == "demo":
        request.getfixturevalue("tiny_demo_world")  # the tiny world's teacher has the demo teacher's shape
    cfg = _teacher_cfg(backend, teacher_ckpt, tmp_path)
    _, img, reference = TEACHER_CASES[backend]
    teacher = build_teacher(cfg, img)
    depth = teacher_depth(cfg)
    assert depth is None or depth == teacher.depth  # the rule that checks align.top_k before a download
    out = check_teacher_contract(teacher, img)
    a = out["cls_attn"]
    if reference is None:  # no [CLS] key: the attention is a distribution over patches
        torch.testing.assert_close(a.sum(1), torch.ones(a.shape[0]))
    else:
        probs = reference(teacher, out["x"])
        torch.testing.assert_close(a, probs[:, 0, 1:], rtol=1e-4, atol=1e-6)
        # with the [CLS] query's share on itself, the row is a distribution
        torch.testing.assert_close(a.sum(1) + probs[:, 0, 0], torch.ones(a.shape[0]), rtol=1e-5, atol=1e-5)


def test_unknown_backend_is_one_line_naming_the_known_ones() -> None:
    with pytest.raises(ConfigError) as e:
        build_teacher(OmegaConf.create({"backend": "clip"}), 32)
    assert "teacher.backend: unknown 'clip'" in str(e.value) and "open_clip" in str(e.value)
    assert "\n" not in str(e.value)


def test_a_backend_registers_and_a_taken_name_is_refused() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_teacher("timm")(lambda cfg, img: None)
