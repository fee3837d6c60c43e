"""Session-wide fixtures: two demo worlds, each with its teacher, named for which one they give.

* The **tiny** world (``tiny_demo_*``, ``output/test_tiny_world`` in this checkout) holds 8 train
  and 4 val images per class and a teacher trained for seconds (``MASKALIGN_DEMO_SIZE=tiny``, see
  ``maskalign/data/demo_world/sizes.py``): the layouts and a teacher of the right shape, built in
  seconds on a fresh clone. The quick tests use it. Its images are the first images of the full
  world's, so a test slicing a few images per class sees the same pixels in either.
* The **full** world (``full_demo_*``, under ``output/test_demo_world`` or wherever
  ``MASKALIGN_DEMO_ROOT`` points) is the one a user's first run builds, with the teacher it trains
  (about a minute). Only slow tests use it: those checking that pre-training under it helps.

The full world is the session's default (``MASKALIGN_DEMO_ROOT``), inherited by every subprocess; a
test that runs code reading the default world (the ``demo`` teacher backend, ``data.dataset=demo``,
a script) on the tiny one asks for ``tiny_demo_world``, which points the environment there.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# One intra-op thread for this process and every one it starts (unless the caller chose): the
# test models are tiny, and on a busy 2-core machine two spinning OpenMP threads per process burn
# about 5x the CPU for the same step (4 steps of the demo teacher: 9.5 CPU-s against 1.9).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MASKALIGN_DEMO_ROOT", str(REPO / "output" / "test_demo_world"))
# The session's default world is the full one, whatever the calling shell chose.
os.environ.pop("MASKALIGN_DEMO_SIZE", None)
TINY_ROOT = REPO / "output" / "test_tiny_world"


@contextmanager
def _tiny_env() -> Iterator[Path]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MASKALIGN_DEMO_ROOT", str(TINY_ROOT))
        mp.setenv("MASKALIGN_DEMO_SIZE", "tiny")
        yield TINY_ROOT


@pytest.fixture(scope="session")
def tiny_demo_imagenet() -> Path:
    """The tiny world's ImageNet copy: 8 train + 4 val images per class (seconds)."""
    from maskalign.data.demo_world import ensure_imagenet

    with _tiny_env():
        return ensure_imagenet()


@pytest.fixture(scope="session")
def tiny_demo_teacher(tiny_demo_imagenet: Path) -> Path:
    """The tiny world's teacher: the demo teacher's architecture, trained for seconds (near chance)."""
    from maskalign.teachers.demo_teacher import ensure_demo_teacher

    with _tiny_env():
        return ensure_demo_teacher()


@pytest.fixture(scope="session")
def tiny_demo_ade20k() -> Path:
    """The tiny world's ADE20K copy: 12 training and 12 validation pairs (a second)."""
    from maskalign.data.demo_world import ensure_ade20k

    with _tiny_env():
        return ensure_ade20k()


@pytest.fixture
def tiny_demo_world(tiny_demo_teacher: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point this test (and the processes it starts) at the tiny world; its root."""
    monkeypatch.setenv("MASKALIGN_DEMO_ROOT", str(TINY_ROOT))
    monkeypatch.setenv("MASKALIGN_DEMO_SIZE", "tiny")
    return TINY_ROOT


@pytest.fixture(scope="session")
def full_demo_imagenet() -> Path:
    """The full world's ImageNet copy (120 train + 30 val images per class): slow tests only."""
    from maskalign.data.demo_world import ensure_imagenet

    return ensure_imagenet()


@pytest.fixture(scope="session")
def full_demo_teacher(full_demo_imagenet: Path) -> Path:
    """The full world's teacher, trained as a user's first run trains it (once, about a minute)."""
    from maskalign.teachers.demo_teacher import ensure_demo_teacher

    return ensure_demo_teacher()


def pretrain_cfg(output_dir: Path, *overrides: str):
    from maskalign.config import config_dir, load_config

    return load_config(None, [f"output_dir={output_dir}", *overrides], config_dir("pretrain"))


@pytest.fixture(scope="session")
def full_demo_encoder(tmp_path_factory: pytest.TempPathFactory, full_demo_teacher: Path) -> Path:
    """The demo MaskAlign encoder of a user's first run (the default recipe on the full world, ~40 s)."""
    from maskalign.engine.pretrain import train

    out = tmp_path_factory.mktemp("full_demo_encoder")
    summary = train(pretrain_cfg(out, "name=session", "data.num_workers=0"))
    return Path(summary["encoder"])


@pytest.fixture(scope="session")
def tiny_demo_encoder(tmp_path_factory: pytest.TempPathFactory, tiny_demo_teacher: Path) -> Path:
    """The default recipe on the tiny world for 2 epochs of one step: a run folder of the real shape."""
    from maskalign.engine.pretrain import train

    out = tmp_path_factory.mktemp("tiny_demo_encoder")
    with _tiny_env():
        summary = train(pretrain_cfg(out, "name=session", "data.num_workers=0", "optim.epochs=2",
                                     "optim.warmup_epochs=1"))
    return Path(summary["encoder"])
