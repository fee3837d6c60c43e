"""Session-wide fixtures: two demo worlds, each with its teacher, named for which one they give.

* The **tiny** world (``tiny_demo_*``, ``output/test_tiny_world`` in this checkout) holds 8 train
  and 4 val images per class and a teacher trained for seconds (``MASKALIGN_DEMO_SIZE=tiny``, see
  ``maskalign/data/demo_world/sizes.py``): the layouts and a teacher of the right shape, built in
  seconds on a fresh clone. The quick tests use it. Its images are the first images of the full
  world's, so a test slicing a few images per class sees the same pixels in either.
* The **full** world (``full_demo_*``, under ``output/test_demo_world`` or wherever
  ``MASKALIGN_DEMO_ROOT`` points) is the one a user's first run builds, with the teacher it trains
  (CPU-minutes). Only slow tests use it: those checking that pre-training under it helps. Its
  teacher and encoder are built once per session, in the background while the quick tests run
  (``tests/session_builds.py``), and shared by pytest-xdist's workers.

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
import session_builds
from session_builds import pretrain_cfg  # noqa: F401  (tests import it from here)

REPO = Path(__file__).resolve().parents[1]
# One intra-op thread for this process and every one it starts (unless the caller chose): the
# test models are tiny, and on a busy 2-core machine two spinning OpenMP threads per process burn
# about 5x the CPU for the same step (4 steps of the demo teacher: 9.5 CPU-s against 1.9).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MASKALIGN_DEMO_ROOT", str(REPO / "output" / "test_demo_world"))
# The session's default world is the full one, whatever the calling shell chose.
os.environ.pop("MASKALIGN_DEMO_SIZE", None)
TINY_ROOT = REPO / "output" / "test_tiny_world"


def _needs(item: pytest.Item) -> int:
    """0 quick, 1 slow (or reads the full world's images), 2 the full teacher, 3 the full encoder."""
    names = set(getattr(item, "fixturenames", ()))
    if "full_demo_encoder" in names:
        return 3
    if "full_demo_teacher" in names:
        return 2
    return 1 if item.get_closest_marker("slow") or "full_demo_imagenet" in names else 0


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which reads the groups into the test ids
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Order the files by what they stand on, and keep each file's tests on one xdist worker.

    Under pytest-xdist (``-n 2``; ``--dist loadgroup`` is the default here) a file is one unit of
    work, so its module fixtures are built once and the live-SLURM tests of a file never queue
    against each other. Files run quick ones first, the full world's last, so that its teacher and
    encoder are built in the background (:func:`pytest_collection_finish`) while the rest runs.
    A test that names its own ``xdist_group`` keeps it.
    """
    files: dict[str, int] = {}
    for item in items:
        key = item.nodeid.split("::")[0]
        files[key] = max(files.get(key, 0), _needs(item))
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(key))
    order = {id(item): i for i, item in enumerate(items)}
    items.sort(key=lambda it: (files[it.nodeid.split("::")[0]], order[id(it)]))


def _shared_base(config: pytest.Config) -> Path:
    """The folder every process of this session shares: the base temp, or its parent under xdist."""
    base = config._tmp_path_factory.getbasetemp()  # the tmp_path_factory fixture's, from a hook
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start building the full world's teacher (and encoder) in the background if a test needs them.

    One process per session does it: the only one without xdist, worker ``gw0`` with it (every
    worker collects every test). The fixtures below wait on the same locks. The builds stop when
    the session's first process (xdist's controller, the worker's parent) is gone: done, ``-x``
    or Ctrl-C; what they wrote is atomic.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if session.config.option.collectonly:
        return
    needs = max((_needs(it) for it in session.items), default=0)
    builds = {2: ["teacher"], 3: ["teacher", "encoder"]}.get(needs, [])
    if worker in (None, "gw0"):
        session_builds.start_in_background(_shared_base(session.config), builds,
                                           session_pid=os.getppid() if worker else os.getpid())
    if builds and worker:
        # The builds are the session's critical path (the encoder's tests run last, and only after
        # them): xdist's workers yield the CPU to them (started above, at the usual priority), so
        # they take one core and not a third of two.
        os.nice(5)


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
    """The full world's teacher, trained as a user's first run trains it (once, minutes of CPU)."""
    return session_builds.full_teacher()


@pytest.fixture(scope="session")
def full_demo_encoder(request: pytest.FixtureRequest, full_demo_teacher: Path) -> Path:
    """The demo MaskAlign encoder of a user's first run (the default recipe on the full world)."""
    return session_builds.full_encoder(_shared_base(request.config))


@pytest.fixture(scope="session")
def tiny_demo_encoder(request: pytest.FixtureRequest, tiny_demo_teacher: Path) -> Path:
    """The default recipe on the tiny world for 2 epochs of one step: a run folder of the real shape."""
    from maskalign.engine.pretrain import train

    def build(out: Path) -> Path:
        with _tiny_env():
            return Path(train(pretrain_cfg(out, "name=session", "data.num_workers=0", "optim.epochs=2",
                                           "optim.warmup_epochs=1"))["encoder"])

    return session_builds.built_once(_shared_base(request.config), "tiny_demo_encoder", build)
