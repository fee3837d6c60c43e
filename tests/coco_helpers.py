"""Shared by the COCO tests: the detectron2 skip, a fabricated demo encoder and a small COCO copy."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "transfer" / "coco_vitdet.py"
# A small demo COCO copy: the tests check plumbing and protocol, not accuracy.
# 3 val images: evaluating an untrained detector costs ~2 CPU-s an image (100 boxes, each with a mask)
COCO_SIZES = dict(image_size=128, train_images=24, val_images=3, seed=0)
# A few CPU iterations of the tiny config at batch 2.
FAST = ["dataloader.train.total_batch_size=2", "train.log_period=1"]


def require_detectron2() -> None:
    """Skip the calling module when detectron2 is not importable.

    A module-level skip (not ``pytest.importorskip``) because the import goes through
    ``maskalign.detection.import_detectron2``, which also needs the pkg_resources stand-in.
    """
    from maskalign.detection import Detectron2Missing, import_detectron2

    try:
        import_detectron2()
    except Detectron2Missing as e:
        pytest.skip(
            f"detectron2 not installed ({e}); bash scripts/install_detectron2.sh installs it",
            allow_module_level=True,
        )


def demo_encoder_state(arch_name: str = "vit_tiny_demo", img_size: int = 64, patch: int = 8, seed: int = 0):
    import torch

    from maskalign.models import build_vit

    torch.manual_seed(seed)
    enc = build_vit(arch_name, img_size, patch)
    return enc


def make_encoder_ckpt(
    out_dir: Path, arch_name: str = "vit_tiny_demo", img_size: int = 64, patch: int = 8
) -> Path:
    """A pre-trained-looking encoder export (random weights) with the metadata a real run writes."""
    from maskalign.checkpoint import export_encoder

    enc = demo_encoder_state(arch_name, img_size, patch)
    meta = {
        "arch": enc.arch(),
        "method": "maskalign",
        "backbone": "ViT-demo/8",
        "supervision": "demo",
        "forward_ratio": 0.3,
        "reconstruct_ratio": 0.0,
        "pt_epochs": 1,
    }
    return export_encoder(out_dir, enc.state_dict(), meta)


def make_coco(root: Path) -> Path:
    from maskalign.data.demo_world import ensure_coco

    return ensure_coco(root, **COCO_SIZES)


def run_script(*args: str, timeout: int = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    # One intra-op thread: on a shared 2-core machine two spinning OpenMP threads made a training
    # step of the tiny config ~6x slower than one (2.3 s vs 15 s at batch 2).
    e = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--local", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=e,
    )
