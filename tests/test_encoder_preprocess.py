"""Each encoder's own preprocessing: the transforms built for it carry its mean, std and interpolation.

The expected statistics are the reference libraries' own preprocessing objects: timm's transform
from ``resolve_data_config`` of a model built with ``pretrained=False`` (its ``pretrained_cfg``
only), and open_clip's ``image_transform`` for the tag's pretrained config.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from torchvision import transforms as T

from maskalign.data.transforms import eval_transform
from maskalign.encoders.preprocess import Preprocess, preprocess_for
from maskalign.encoders.source_spec import CheckpointError
from maskalign.transfer.data import finetune_train_transform, linprobe_train_transform


def _normalize(transform) -> list[float]:
    """mean then std of the transform's one Normalize (float32 in timm's, float in torchvision's)."""
    ops = [t for t in getattr(transform, "transforms", []) if isinstance(t, T.Normalize)]
    (op,) = ops
    return [float(v) for v in op.mean] + [float(v) for v in op.std]


def _ours(prep: Preprocess):
    from omegaconf import OmegaConf

    aug = OmegaConf.create({"scale_min": 0.08, "color_jitter": None, "auto_augment": "rand-m9-mstd0.5-inc1",
                            "reprob": 0.25, "remode": "pixel", "recount": 1})
    return [eval_transform(32, prep.crop_pct or 0.875, prep.mean, prep.std, prep.interpolation),
            linprobe_train_transform(32, prep), finetune_train_transform(32, aug, prep)]


def test_a_timm_augreg_encoder_gets_timms_statistics() -> None:
    import timm
    from timm.data import create_transform, resolve_data_config

    name = "vit_small_patch16_224.augreg_in21k"
    model = timm.create_model(name, pretrained=False, depth=1)
    theirs = create_transform(**resolve_data_config({}, model=model))
    prep = preprocess_for(f"timm:{name}")
    assert prep.mean == pytest.approx((0.5, 0.5, 0.5))  # not ImageNet's
    for t in _ours(prep):
        assert _normalize(t) == pytest.approx(_normalize(theirs), rel=1e-6)
    assert prep.crop_pct == pytest.approx(model.pretrained_cfg["crop_pct"])
    assert prep.interpolation == model.pretrained_cfg["interpolation"]


def test_an_open_clip_encoder_gets_open_clips_statistics() -> None:
    import open_clip

    cfg = open_clip.get_pretrained_cfg("ViT-B-16", "openai")
    theirs = open_clip.image_transform(224, is_train=False, mean=cfg["mean"], std=cfg["std"])
    prep = preprocess_for("open_clip:ViT-B-16/openai")
    for t in _ours(prep):
        assert _normalize(t) == pytest.approx(_normalize(theirs), rel=1e-6)
    assert _normalize(theirs)[:3] != pytest.approx([0.485, 0.456, 0.406])  # OpenAI's, not ImageNet's


def test_gpu_recipe_carries_the_statistics_too() -> None:
    prep = preprocess_for("timm:vit_small_patch16_224.augreg_in21k")
    recipe = linprobe_train_transform(32, prep).device_recipe
    assert recipe.mean == pytest.approx((0.5, 0.5, 0.5)) and recipe.std == pytest.approx((0.5, 0.5, 0.5))


def test_files_by_family_and_an_explicit_override(tmp_path: Path) -> None:
    import open_clip

    clip = preprocess_for(str(tmp_path / "clip.pt"), {"family": "clip_quickgelu"})
    assert clip.mean == pytest.approx(tuple(open_clip.OPENAI_DATASET_MEAN))
    mae = preprocess_for(str(tmp_path / "mae.pth"), {"family": "vit"})
    assert mae.mean == pytest.approx((0.485, 0.456, 0.406)) and mae.std == pytest.approx((0.229, 0.224, 0.225))
    given = preprocess_for(f"{tmp_path / 'x.pth'}#mean=0.5/0.5/0.5,std=0.25/0.25/0.25,crop_pct=1.0",
                           {"family": "vit"})
    assert (given.mean, given.std, given.crop_pct) == ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), 1.0)
    with pytest.raises(CheckpointError, match="three numbers"):
        preprocess_for(f"{tmp_path / 'x.pth'}#mean=0.5", {"family": "vit"})


def test_the_loaded_encoder_and_its_record_state_the_preprocessing(tmp_path: Path) -> None:
    import open_clip
    from encoder_formats import clip

    from maskalign.transfer.source import encoder_record, load_pretrained

    path, _ = clip(tmp_path)
    src = load_pretrained(f"{path}#num_heads=2")
    entry = encoder_record(src)["preprocess"]
    assert entry["mean"] == pytest.approx(list(open_clip.OPENAI_DATASET_MEAN))
    assert "CLIP" in entry["source"]
