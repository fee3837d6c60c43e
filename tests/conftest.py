"""Session-wide fixtures: one demo world, one demo teacher and one pre-trained demo encoder.

The demo world is built once per checkout under ``output/test_demo_world`` (or wherever
``MASKALIGN_DEMO_ROOT`` points) and reused by every test and every subprocess they start; the
teacher cached there is the one a user's first run trains (about a minute), since the transfer
tests check that pre-training under it helps.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("MASKALIGN_DEMO_ROOT", str(REPO / "output" / "test_demo_world"))


@pytest.fixture(scope="session")
def demo_imagenet() -> Path:
    from maskalign.data.demo_world import ensure_imagenet

    return ensure_imagenet()


@pytest.fixture(scope="session")
def demo_teacher(demo_imagenet: Path) -> Path:
    """The cached demo teacher of the test world, trained as a user's first run trains it (once)."""
    from maskalign.teachers.demo_teacher import ensure_demo_teacher

    return ensure_demo_teacher()


def pretrain_cfg(output_dir: Path, *overrides: str):
    from maskalign.config import config_dir, load_config

    return load_config(None, [f"output_dir={output_dir}", *overrides], config_dir("pretrain"))


@pytest.fixture(scope="session")
def pretrained_demo(tmp_path_factory: pytest.TempPathFactory, demo_teacher: Path) -> Path:
    """The demo MaskAlign encoder of a user's first run (the default recipe, ~40 s); its ``encoder.pth``."""
    from maskalign.engine.pretrain import train

    out = tmp_path_factory.mktemp("pretrained_demo")
    summary = train(pretrain_cfg(out, "name=session", "data.num_workers=0"))
    return Path(summary["encoder"])
