"""The session's shared builds: built once under the lock, retried after a failure, and a background
builder that leaves when its session's process is gone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import session_builds


def test_built_once_builds_once_and_a_failed_build_is_retried(tmp_path: Path) -> None:
    calls: list[Path] = []

    def fails(folder: Path) -> Path:
        calls.append(folder)
        raise RuntimeError("no")

    def builds(folder: Path) -> Path:
        calls.append(folder)
        (folder / "x.pth").write_text("w")
        return folder / "x.pth"

    with pytest.raises(RuntimeError):
        session_builds.built_once(tmp_path, "thing", fails)
    assert not (tmp_path / "thing.path").exists()  # nothing claims a build that failed
    first = session_builds.built_once(tmp_path, "thing", builds)
    again = session_builds.built_once(tmp_path, "thing", fails)  # read, not built
    assert first == again == tmp_path / "thing" / "x.pth" and len(calls) == 2


def test_the_builder_leaves_when_the_session_is_gone(tmp_path: Path) -> None:
    session = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    watcher = subprocess.Popen([sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[1]); "
                                "import session_builds; session_builds._exit_with(int(sys.argv[2])); time.sleep(600)",
                                str(Path(session_builds.__file__).parent), str(session.pid)])
    try:
        session.kill()
        session.wait()
        assert watcher.wait(timeout=120) == 3
    finally:
        for p in (session, watcher):
            p.kill()
