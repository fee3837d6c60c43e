"""Data set faults are found before anything trains, as one line naming the file and the entry:
a class folder without images, a malformed COCO box or polygon."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from runfolder_helpers import REPO, SUBMIT, tiny_imagenet, tiny_run_args

from maskalign.data.imagenet import DataError, SafeImageFolder, image_folder


def _with_empty_class(tmp_path: Path) -> tuple[Path, Path]:
    root = tiny_imagenet(tmp_path / "in", per_class=2)
    empty = sorted((root / "train").iterdir())[1]
    for f in empty.iterdir():
        f.unlink()
    (empty / "notes.txt").write_text("not an image")
    return root, empty


def test_empty_class_folder_is_one_line(tmp_path: Path, tiny_demo_imagenet: Path) -> None:
    root, empty = _with_empty_class(tmp_path)
    with pytest.raises(DataError) as e:
        image_folder(root, "train")
    assert str(e.value).startswith(f"{empty}: class folder holds no image file") and "\n" not in str(e.value)
    # the folder-only data set (robustness' class lists) names it too, never a FileNotFoundError
    with pytest.raises(DataError, match=empty.name):
        SafeImageFolder(root / "train")


def test_empty_class_folder_in_a_pretraining_job(tmp_path: Path, tiny_demo_world: Path) -> None:
    root, empty = _with_empty_class(tmp_path)
    res = subprocess.run([sys.executable, SUBMIT, "--local", *tiny_run_args(root, tmp_path / "out", "r")],
                         capture_output=True, text=True, timeout=600, cwd=REPO)
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert lines == [f"error: {empty}: class folder holds no image file (.jpg, .jpeg, .png, ...); "
                     "add its images or remove the folder"], res.stderr


@pytest.fixture(scope="module")
def coco_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from coco_helpers import require_detectron2

    require_detectron2()
    from maskalign.data.demo_world import ensure_coco

    dst = tmp_path_factory.mktemp("coco") / "coco"
    shutil.copytree(ensure_coco(), dst, ignore=shutil.ignore_patterns("train2017", "val2017"))
    for split in ("train2017", "val2017"):
        (dst / split).symlink_to(Path(ensure_coco()) / split, target_is_directory=True)
    return dst


@pytest.mark.parametrize("field,value,needle", [
    ("bbox", [10.0, 10.0, 5.0], "bbox [10.0, 10.0, 5.0] is not [x, y, width, height]"),
    ("bbox", [10.0, 10.0, -5.0, 4.0], "width, height >= 0"),
    ("bbox", [10.0, 10.0, "5", 4.0], "is not [x, y, width, height]"),
    ("segmentation", [[1.0, 2.0, 3.0, 4.0, 5.0, "x"]], "segmentation polygon 0"),
])
def test_malformed_coco_annotation_is_one_line(coco_copy: Path, tmp_path: Path, field: str, value, needle: str) -> None:
    from detectron2.data import DatasetCatalog

    from maskalign.detection.datasets import CocoSource, DataError, register

    root = tmp_path / "coco"
    shutil.copytree(coco_copy, root, symlinks=True)
    ann = root / "annotations" / "instances_train2017.json"
    data = json.loads(ann.read_text())
    target = data["annotations"][3]
    target[field] = value
    ann.write_text(json.dumps(data))
    register(CocoSource(root, "coco"))
    with pytest.raises(DataError) as e:
        DatasetCatalog.get("coco_2017_train")
    msg = str(e.value)
    assert msg.startswith(f"{ann}: image id {target['image_id']}, annotation ") and needle in msg, msg
    assert "\n" not in msg


def test_the_layout_check_reads_what_imagefolder_reads(tmp_path: Path) -> None:
    """The layout check spells torchvision's extension list out (importing torchvision costs seconds
    per process); if torchvision's changes, so must this one."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    from maskalign.data.layout import READABLE

    assert READABLE == IMG_EXTENSIONS


def test_a_submission_is_checked_without_importing_torch(tmp_path: Path) -> None:
    """``pretrain/submit.py --slurm`` validates its data, teacher and run folder before sbatch; none
    of that needs torch, which alone costs seconds of CPU per submission (a sweep submits many)."""
    (tmp_path / "in" / "train" / "n01").mkdir(parents=True)
    (tmp_path / "in" / "train" / "n01" / "a.JPEG").write_bytes(b"")
    code = f"""
import sys
from maskalign.config import config_dir, load_config
from maskalign.engine.preflight import validate
cfg = load_config(None, ["data.dataset=imagenet", "data.root={tmp_path / 'in'}", "output_dir={tmp_path / 'out'}"],
                  config_dir("pretrain"))
validate(cfg)
print(sorted(m for m in ("torch", "torchvision", "timm") if m in sys.modules))
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"
