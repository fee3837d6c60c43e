"""The dense tasks normalise pixels with the encoder's own statistics, as the classification tasks do:
OpenAI's mean/std for a CLIP file, ImageNet's for this project's encoders; a command-line value wins."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import encoder_formats as fmts
import pytest
from open_clip.constants import IMAGENET_MEAN, IMAGENET_STD, OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

from maskalign.transfer.source import load_pretrained


def _scaled(values) -> list[float]:
    return [pytest.approx(255.0 * v) for v in values]


@pytest.fixture(scope="module")
def clip_source(tmp_path_factory: pytest.TempPathFactory):
    path, _ = fmts.clip(tmp_path_factory.mktemp("clip"), openai=True, image_size=32, layers=2, width=64, heads=2)
    return load_pretrained(f"{path}#num_heads=2")


def _detectron_cfg() -> SimpleNamespace:
    return SimpleNamespace(model=SimpleNamespace(pixel_mean=[123.675, 116.28, 103.53],
                                                 pixel_std=[58.395, 57.12, 57.375]))


def test_coco_detector_takes_the_clip_encoders_statistics(clip_source) -> None:
    from maskalign.detection.train import use_encoder_pixel_stats

    cfg = _detectron_cfg()
    use_encoder_pixel_stats(cfg, clip_source, ())
    assert cfg.model.pixel_mean == _scaled(OPENAI_DATASET_MEAN) and cfg.model.pixel_std == _scaled(OPENAI_DATASET_STD)
    kept = _detectron_cfg()
    use_encoder_pixel_stats(kept, clip_source, ("model.pixel_mean=[1,2,3]",))
    assert kept.model.pixel_mean == [123.675, 116.28, 103.53]  # the command line's (applied by the loader) stays


def test_ade20k_preprocessor_takes_the_encoders_statistics(clip_source, tmp_path: Path) -> None:
    from maskalign.segmentation.train import use_encoder_pixel_stats

    cfg = SimpleNamespace(model=SimpleNamespace(data_preprocessor={"mean": [0.0] * 3, "std": [1.0] * 3}))
    use_encoder_pixel_stats(cfg, clip_source, ())
    dp = cfg.model.data_preprocessor
    assert dp["mean"] == _scaled(OPENAI_DATASET_MEAN) and dp["std"] == _scaled(OPENAI_DATASET_STD)
    ours, _ = fmts.deit3(tmp_path)  # a supervised timm-family file: timm's DeiT III config (ImageNet's)
    use_encoder_pixel_stats(cfg, load_pretrained(f"{ours}#num_heads=2"), ())
    assert dp["mean"] == _scaled(IMAGENET_MEAN) and dp["std"] == _scaled(IMAGENET_STD)
