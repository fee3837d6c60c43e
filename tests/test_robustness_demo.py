"""The demo world's robustness copies and the sweep over them, including an incomplete ImageNet-C."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from transfer_helpers import DEMO_C_PER_CLASS, DEMO_PER_CLASS, make_classifier_ckpt, robustness_overrides

from maskalign.config import config_dir
from maskalign.data.demo_world.robustness_layouts import (
    COMMON_CORRUPTIONS,
    DEMO_SUBSETS,
    corrupt_image,
    ensure_robustness_set,
)
from maskalign.data.demo_world.scene import image_rng, render_classification_image
from maskalign.data.demo_world.shapes import WNIDS
from maskalign.transfer.metrics import CORRUPTIONS

CONFIGS = config_dir("robustness")


@pytest.fixture(scope="session")
def demo_robustness() -> dict[str, Path]:
    sizes = {"imagenet_c": DEMO_C_PER_CLASS}
    return {name: ensure_robustness_set(name, per_class=sizes.get(name, DEMO_PER_CLASS))
            for name in ("imagenet_a", "imagenet_r", "imagenet_sketch", "imagenet_v2", "imagenet_c")}


def test_corruption_list_matches_the_mce_list() -> None:
    from imagecorruptions import get_corruption_names

    assert tuple(COMMON_CORRUPTIONS) == CORRUPTIONS == tuple(get_corruption_names("common"))


@pytest.mark.parametrize("name", ["glass_blur", "impulse_noise", "frost", "gaussian_noise", "fog"])
def test_corruptions_are_deterministic(name: str) -> None:
    img = render_classification_image(image_rng(0, "t", 1, 0), 64, 1)
    a, b = corrupt_image(img, name, 3, seed=7), corrupt_image(img, name, 3, seed=7)
    assert a.shape == img.shape and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, corrupt_image(img, name, 3, seed=8))


def test_layouts_as_released(demo_robustness: dict[str, Path]) -> None:
    def dirs(p):
        return sorted(d.name for d in p.iterdir() if d.is_dir())
    assert dirs(demo_robustness["imagenet_a"]) == sorted(DEMO_SUBSETS["imagenet_a"])
    assert dirs(demo_robustness["imagenet_r"]) == sorted(DEMO_SUBSETS["imagenet_r"])
    assert demo_robustness["imagenet_sketch"].name == "sketch" and dirs(demo_robustness["imagenet_sketch"]) == WNIDS
    sketch = next(demo_robustness["imagenet_sketch"].glob("*/*.JPEG"))
    assert Image.open(sketch).mode == "L"
    assert sorted(dirs(demo_robustness["imagenet_v2"]), key=int) == [str(i) for i in range(len(WNIDS))]
    c = demo_robustness["imagenet_c"]
    assert dirs(c) == sorted(CORRUPTIONS)
    for name in CORRUPTIONS:
        assert dirs(c / name) == ["1", "2", "3", "4", "5"]
        assert dirs(c / name / "5") == WNIDS
        assert len(list((c / name / "5" / WNIDS[0]).glob("*.JPEG"))) == DEMO_C_PER_CLASS
    for path in demo_robustness.values():
        assert len(list(path.rglob("*.[jJ][pP]*[gG]"))) > 0


def test_built_once(demo_robustness: dict[str, Path]) -> None:
    marker = demo_robustness["imagenet_a"] / "_COMPLETE.json"
    before = marker.stat().st_mtime_ns
    assert ensure_robustness_set("imagenet_a", per_class=DEMO_PER_CLASS) == demo_robustness["imagenet_a"]
    assert marker.stat().st_mtime_ns == before


def test_v2_folders_are_labelled_by_index(demo_robustness: dict[str, Path]) -> None:
    from maskalign.data.imagenet import SafeImageFolder
    from maskalign.transfer.label_space import demo

    ds = SafeImageFolder(demo_robustness["imagenet_v2"], class_to_idx=demo().index_folders())
    assert all(int(Path(p).parent.name) == t for p, t in ds.samples)


def test_missing_corruption_is_named_and_the_rest_evaluated(tmp_path: Path, demo_robustness: dict[str, Path]) -> None:

    from maskalign.records import read_record
    from maskalign.tasks import job_for

    partial = tmp_path / "imagenet-c"
    partial.mkdir()
    for name in CORRUPTIONS:
        if name != "fog":
            os.symlink(demo_robustness["imagenet_c"] / name, partial / name)
    ckpt = make_classifier_ckpt(tmp_path / "clf" / "checkpoint.pth")
    result = job_for("robustness", ckpt=ckpt, overrides=robustness_overrides(
        tmp_path / "out", "name=partial", f"data.imagenet_c={partial}", "benchmarks=[in_c,in_a]"))()
    m = result["metrics"]
    assert math.isnan(m["in_c_mce"])
    assert sorted(k.split("/")[1] for k in m if k.startswith("in_c_ce/")) == sorted(set(CORRUPTIONS) - {"fog"})
    assert all(math.isfinite(v) and v > 0 for k, v in m.items() if k.startswith("in_c_ce/"))
    assert any("'fog' is missing" in n for n in result["notes"])
    assert any("ImageNet-A: skipped" in n for n in result["notes"])  # real-data mode: no path, no run
    rec = read_record(tmp_path / "out" / "robustness" / "partial" / "record.json")
    assert rec.task == "robustness" and math.isnan(rec.metrics["in_c_mce"])
