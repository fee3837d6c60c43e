"""Where demo-world copies live unless a caller says otherwise."""

from __future__ import annotations

import os
from pathlib import Path

ROOT_ENV = "MASKALIGN_DEMO_ROOT"


def default_root() -> Path:
    """``$MASKALIGN_DEMO_ROOT`` if set, else ``<repo>/output/demo_world``.

    ``<repo>`` is the checkout holding this package. An installed (non-editable) package has no
    checkout around it, and writing into site-packages would be wrong, so it falls back to
    ``./output/demo_world`` under the working directory.
    """
    env = os.environ.get(ROOT_ENV)
    if env:
        return Path(env).expanduser()
    repo = Path(__file__).resolve().parents[3]
    if (repo / "pyproject.toml").is_file() and (repo / "maskalign").is_dir():
        return repo / "output" / "demo_world"
    return Path.cwd() / "output" / "demo_world"


def resolve_root(root: str | os.PathLike | None) -> Path:
    return default_root() if root is None else Path(root)
