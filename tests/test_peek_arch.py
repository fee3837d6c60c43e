"""Sizes read from a checkpoint's shapes alone (memory-mapped), so the dense tasks refuse an encoder
of the wrong size before the file is read in full: the same sizes as the full loader's, for every family."""

from __future__ import annotations

from pathlib import Path

import encoder_formats as fmts
import pytest
import torch

from maskalign.encoders import load_encoder, peek_arch

SIZES = ("patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio")


@pytest.mark.parametrize("family", ["dinov2_reg", "clip", "deit3"])
def test_peeked_sizes_equal_the_loaders(family: str, tmp_path: Path) -> None:
    spec = fmts.demo_sized(tmp_path, family)
    full = load_encoder(spec).arch
    peeked = peek_arch(spec)
    assert {k: peeked[k] for k in SIZES} == {k: full[k] for k in SIZES}


def test_peek_maps_the_file_instead_of_reading_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = fmts.demo_sized(tmp_path, "deit3")
    calls = []
    real = torch.load

    def recording(*args, **kwargs):
        calls.append(kwargs.get("mmap", False))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording)
    assert peek_arch(spec)["embed_dim"] == load_encoder(spec).arch["embed_dim"]
    assert calls == [True, False]  # the peek maps the file; only the full load reads it
    assert peek_arch("timm:vit_small_patch16_224") is None  # a hub name: nothing to peek at


def test_coco_refuses_a_wrong_sized_encoder_before_loading_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from coco_helpers import require_detectron2

    require_detectron2()
    from maskalign.encoders import load as encoder_load
    from maskalign.errors import ConfigError
    from maskalign.tasks import JobSpec, get_task

    spec = fmts.demo_sized(tmp_path, "deit3")  # patch 8 and width 96: not the ViT-B/16 config

    def never(*args, **kwargs):
        raise AssertionError("the whole encoder was loaded before its sizes were checked")

    monkeypatch.setattr(encoder_load, "load_encoder", never)
    job = JobSpec("coco", spec, str(tmp_path / "out"), "r", config="mask_rcnn_vitdet_b_100ep")
    with pytest.raises(ConfigError) as e:
        get_task("coco").prepare(job)
    assert "\n" not in str(e.value) and "is a ViT with patch_size=8" in str(e.value)
