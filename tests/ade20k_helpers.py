"""Shared by the ``test_ade20k_*`` modules: the mmseg skip, a fabricated encoder, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CLI = REPO / "transfer" / "ade20k_upernet.py"


def require_mmseg() -> None:
    """Skip the calling module when mmsegmentation's stack does not import.

    A module-level skip rather than ``importorskip``: the stack needs the ``mmcv.ops`` stand-ins
    installed before import, which only ``import_mmseg`` does.
    """
    from maskalign.segmentation.mmseg_import import mmseg_available

    ok, why = mmseg_available()
    if not ok:
        pytest.skip(f"mmsegmentation not usable ({why})", allow_module_level=True)


def fabricate_encoder(out_dir: Path, img_size: int = 64, patch: int = 8, seed: int = 0):
    """A demo-sized encoder exported as a pre-training run would; returns (encoder.pth, model)."""
    import torch

    from maskalign.checkpoint import export_encoder
    from maskalign.models import build_vit

    torch.manual_seed(seed)
    enc = build_vit("vit_tiny_demo", img_size, patch)
    meta = {"arch": enc.arch(), "method": "maskalign", "backbone": "ViT-demo/8", "supervision": "demo",
            "forward_ratio": 0.3, "reconstruct_ratio": 0.0, "pt_epochs": 1}
    return export_encoder(out_dir, enc.state_dict(), meta), enc


def crop_overrides(px: int) -> list[str]:
    """mmseg overrides that put an UperNet config's crop, resize and sliding window at ``px``.

    As the ADE20K recipe at 512 relates them: short side ``px`` (long side up to 4x), crop
    ``px`` x ``px``, test windows of ``px`` at stride ``2 px / 3`` (512 -> 341).
    """
    crop, side, stride = f"({px},{px})", px * 4, px * 2 // 3
    return [f"model.backbone.img_size={crop}", f"model.data_preprocessor.size={crop}",
            f"model.test_cfg.crop_size={crop}", f"model.test_cfg.stride=({stride},{stride})",
            f"train_dataloader.dataset.pipeline.2.scale=({side},{px})",
            f"train_dataloader.dataset.pipeline.3.crop_size={crop}",
            f"val_dataloader.dataset.pipeline.1.scale=({side},{px})",
            f"test_dataloader.dataset.pipeline.1.scale=({side},{px})"]


def run_cli(*args: str, cwd: Path, timeout: int = 600, threads: int = 1) -> subprocess.CompletedProcess:
    # One torch thread: on a busy 2-core runner, OpenMP threads spin-waiting for each other make
    # two threads several times slower than one.
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    return subprocess.run([sys.executable, str(CLI), "--local", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env, check=False)
