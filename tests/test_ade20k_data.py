"""Bad ADE20K input gets one clear line naming the file (exit 2), before any job starts."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from ade20k_helpers import fabricate_encoder, require_mmseg, run_cli
from PIL import Image

require_mmseg()

from maskalign.segmentation.datasets import DataError, check_layout, class_names, num_classes


@pytest.fixture(scope="module")
def demo_root(tiny_demo_ade20k: Path) -> Path:
    return tiny_demo_ade20k


@pytest.fixture
def small_tree(tmp_path: Path, demo_root: Path) -> Path:
    """3 training and 2 validation pairs of the demo copy, with its classes.json."""
    root = tmp_path / "ADEChallengeData2016"
    for split, n in (("training", 3), ("validation", 2)):
        for kind, ext in (("images", "jpg"), ("annotations", "png")):
            (root / kind / split).mkdir(parents=True)
            for f in sorted((demo_root / kind / split).glob(f"*.{ext}"))[:n]:
                shutil.copy(f, root / kind / split / f.name)
    shutil.copy(demo_root / "classes.json", root / "classes.json")
    return root


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> Path:
    return fabricate_encoder(tmp_path_factory.mktemp("enc"))[0]


def _first_ann(root: Path, split: str = "training") -> Path:
    return min((root / "annotations" / split).glob("*.png"))


def _one_error_line(proc) -> str:
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_the_demo_copy_passes(demo_root: Path) -> None:
    assert check_layout(demo_root) == {"training": 12, "validation": 12}  # the tiny world's copy
    assert num_classes(demo_root) == 10 and class_names(demo_root)[0] == "disc"


def test_annotation_of_another_size(small_tree: Path, encoder: Path, tmp_path: Path) -> None:
    ann = _first_ann(small_tree)
    Image.open(ann).resize((64, 48), Image.NEAREST).save(ann)
    line = _one_error_line(run_cli("--ckpt", str(encoder), "--data", str(small_tree), cwd=tmp_path))
    assert str(ann) in line and "annotation is 64x48 but its image" in line and "128x128" in line


def test_class_index_outside_the_label_set(small_tree: Path, encoder: Path, tmp_path: Path) -> None:
    ann = _first_ann(small_tree, "validation")
    lab = np.array(Image.open(ann))
    lab[5, 7] = 37
    Image.fromarray(lab).save(ann)
    line = _one_error_line(run_cli("--ckpt", str(encoder), "--data", str(small_tree), cwd=tmp_path))
    assert str(ann) in line and "class index 37 outside the label set 0..10" in line


def test_missing_split_folder(small_tree: Path, encoder: Path, tmp_path: Path) -> None:
    shutil.rmtree(small_tree / "annotations" / "validation")
    line = _one_error_line(run_cli("--ckpt", str(encoder), "--data", str(small_tree), cwd=tmp_path))
    assert str(small_tree / "annotations" / "validation") in line and "missing split folder" in line


def test_image_without_annotation(small_tree: Path) -> None:
    ann = _first_ann(small_tree)
    ann.unlink()
    with pytest.raises(DataError, match=f"{ann}: missing annotation"):
        check_layout(small_tree)


def test_rgb_annotation_is_refused(small_tree: Path) -> None:
    ann = _first_ann(small_tree)
    Image.open(ann).convert("RGB").save(ann)
    with pytest.raises(DataError, match="single-channel PNG"):
        check_layout(small_tree)


def test_ignore_value_255_is_accepted(small_tree: Path) -> None:
    ann = _first_ann(small_tree)
    lab = np.array(Image.open(ann))
    lab[:3] = 255
    Image.fromarray(lab).save(ann)
    assert check_layout(small_tree) == {"training": 3, "validation": 2}


def test_parent_folder_is_accepted(small_tree: Path) -> None:
    assert check_layout(small_tree.parent) == {"training": 3, "validation": 2}


def test_eval_only_needs_only_the_validation_split(small_tree: Path) -> None:
    shutil.rmtree(small_tree / "images" / "training")
    assert check_layout(small_tree, ("validation",)) == {"validation": 2}


def _main_in_process(argv: list[str], capsys) -> str:
    """The CLI's main() in this process (the three data cases above run it as a subprocess)."""
    import importlib.util

    from ade20k_helpers import CLI

    spec = importlib.util.spec_from_file_location("ade20k_upernet_cli", CLI)
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    capsys.readouterr()
    rc = cli.main(cli.get_args_parser().parse_args(["--local", *argv]))
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize("args, expected", [
    (["--data", "/nonexistent/ade"], "/nonexistent/ade: no such data folder"),
    (["train_cfg.max_iter=10"], "unknown config key 'train_cfg.max_iter'"),
    (["+train_cfg.nothing.here=1"], "cannot add 'train_cfg.nothing.here'"),
    (["--config", "upernet_vit_b16_ade20k_512_160k"], "backbone does not match the checkpoint's ViT"),
    (["--config", "no_such_config"], "segmentation config 'no_such_config' not found"),
    (["--eval-only", "--name", "never_trained"], "no finished model to evaluate"),
])
def test_bad_command_lines(args, expected, encoder: Path, tmp_path: Path, tiny_demo_world: Path, capsys) -> None:
    line = _main_in_process(["--ckpt", str(encoder), "--output-dir", str(tmp_path), *args], capsys)
    assert expected in line


def test_bad_checkpoint(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "encoder.pth"
    bad.write_bytes(b"not a checkpoint")
    line = _main_in_process(["--ckpt", str(bad)], capsys)
    assert str(bad) in line
