"""Published families through every job on the demo world (``slow``): fine-tune (then robustness),
linear probe, COCO ViTDet and ADE20K UperNet from DINOv2-with-registers, OpenAI CLIP and DeiT III
files in their official layouts, at the demo configs' ViT sizes. Each run must finish, record the
encoder as external with its loading report, and (dense tasks) build the timm wrapper."""

from __future__ import annotations

import json
import math
from pathlib import Path

import encoder_formats as fmts
import pytest
from omegaconf import OmegaConf
from transfer_helpers import robustness_overrides

from maskalign.config import config_dir, load_config
from maskalign.records import read_record

pytestmark = pytest.mark.slow
FAMILIES = ["dinov2_reg", "clip", "deit3"]
SHORT = ["optim.epochs=1", "optim.warmup_epochs=0", "runtime.max_steps=2", "data.num_workers=0", "seed=0"]


def _cfg(task: str, *overrides: str):
    return OmegaConf.create(OmegaConf.to_container(load_config(None, list(overrides), config_dir(task))))


@pytest.fixture(scope="module")
def specs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("external")
    return {f: fmts.demo_sized(root / f, f) for f in FAMILIES}


def _check_record(rec: dict, family: str) -> None:
    assert rec["method"].startswith(f"external:{family if family != 'clip' else 'clip_quickgelu'}:")
    assert rec["source_checkpoint"]["family"].startswith(family.split("_")[0])
    loading = rec["config"]["encoder"]["loading"]
    assert loading["used"]["blocks.*"] > 0 and rec["config"]["encoder"]["arch"]["depth"] == 6


@pytest.mark.parametrize("family", FAMILIES)
def test_finetune_and_linprobe(specs: dict[str, str], family: str, tmp_path: Path) -> None:
    from maskalign.tasks import job_for

    ft = job_for("finetune", ckpt=specs[family], overrides=[f"output_dir={tmp_path}", f"name=ft_{family}", *SHORT])()
    assert math.isfinite(ft["metrics"]["top1"])
    _check_record(json.loads((Path(ft["out_dir"]) / "record.json").read_text()), family)
    lp = job_for("linprobe", ckpt=specs[family], overrides=[f"output_dir={tmp_path}", f"name=lp_{family}", *SHORT])()
    _check_record(json.loads((Path(lp["out_dir"]) / "record.json").read_text()), family)
    if family == "dinov2_reg":  # the fine-tuned classifier of a registers model through the robustness sweep
        result = job_for("robustness", ckpt=ft["checkpoint"], overrides=robustness_overrides(tmp_path, "name=rob"))()
        assert all(math.isfinite(v) for v in result["metrics"].values())
        assert read_record(tmp_path / "robustness" / "rob" / "record.json").method.startswith("external:dinov2_reg")


@pytest.mark.parametrize("family", FAMILIES)
def test_coco(specs: dict[str, str], family: str, tmp_path: Path) -> None:
    from coco_helpers import FAST, make_coco, require_detectron2, run_script

    require_detectron2()
    make_coco(tmp_path)
    out = tmp_path / "runs" / "coco" / family  # --output-dir is the output root: <root>/coco/<name>
    proc = run_script("--ckpt", specs[family], "--data", str(tmp_path), "--output-dir", str(tmp_path / "runs"),
                      "--name", family, *FAST, "train.max_iter=2")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "TimmViTBackbone" in (out / "config.yaml").read_text()
    _check_record(json.loads((out / "record.json").read_text()), family)


@pytest.mark.parametrize("family", FAMILIES)
def test_ade20k(specs: dict[str, str], family: str, tmp_path: Path) -> None:
    from ade20k_helpers import require_mmseg, run_cli

    require_mmseg()
    args = ["--ckpt", specs[family], "--output-dir", str(tmp_path), "--name", family,
            "param_scheduler.0.end=1", "param_scheduler.1.begin=1", "param_scheduler.1.end=2",
            "train_cfg.val_interval=2", "default_hooks.checkpoint.interval=2", "train_cfg.max_iters=2",
            "+train_dataloader.dataset.indices=4", "+val_dataloader.dataset.indices=4",
            "+test_dataloader.dataset.indices=4"]
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rec = json.loads((tmp_path / "ade20k" / family / "record.json").read_text())
    assert rec["config"]["backbone"]["type"] == "MaskalignTimmViT"
    _check_record(rec, family)
