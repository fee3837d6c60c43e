"""Session-wide fixtures: one demo world, one demo teacher and one pre-trained demo encoder.

The demo world is built once per checkout under ``output/test_demo_world`` (or wherever
``MASKALIGN_DEMO_ROOT`` points) and reused by every test and every subprocess they start; the
teacher cached there is trained for fewer epochs than a user's first run, since the tests need a
working pipeline, not a good teacher.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("MASKALIGN_DEMO_ROOT", str(REPO / "output" / "test_demo_world"))
TEST_TEACHER_EPOCHS = 2
TEST_TEACHER_CORPUS = 1000


@pytest.fixture(scope="session")
def demo_imagenet() -> Path:
    from maskalign.data.demo_world import ensure_imagenet

    return ensure_imagenet()


@pytest.fixture(scope="session")
def demo_teacher(demo_imagenet: Path) -> Path:
    """The cached demo teacher of the test world (trained quickly if absent)."""
    import fcntl
    import json

    from maskalign.teachers import demo_teacher as dt

    out = demo_imagenet.parent / "teacher"
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        side = out / "encoder.json"
        if not (side.is_file() and json.loads(side.read_text()).get("version") == dt.VERSION):
            dt.train_demo_teacher(demo_imagenet, out, epochs=TEST_TEACHER_EPOCHS, corpus=TEST_TEACHER_CORPUS)
    return out / "encoder.pth"


def pretrain_cfg(output_dir: Path, *overrides: str):
    from maskalign.config import load_config

    return load_config(None, [f"output_dir={output_dir}", *overrides], REPO / "pretrain" / "configs")


@pytest.fixture(scope="session")
def pretrained_demo(tmp_path_factory: pytest.TempPathFactory, demo_teacher: Path) -> Path:
    """A demo MaskAlign encoder pre-trained for a few epochs; returns its ``encoder.pth``."""
    from maskalign.engine.pretrain import train

    out = tmp_path_factory.mktemp("pretrained_demo")
    summary = train(pretrain_cfg(out, "name=session", "optim.epochs=4", "optim.warmup_epochs=1",
                                 "data.num_workers=0"))
    return Path(summary["encoder"])
