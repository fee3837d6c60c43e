"""Where demo-world copies live unless a caller says otherwise."""

from __future__ import annotations

import os
from pathlib import Path

ROOT_ENV = "MASKALIGN_DEMO_ROOT"


def default_root() -> Path:
    """``$MASKALIGN_DEMO_ROOT`` if set, else ``demo_world/`` in the output root.

    The output root is ``$MASKALIGN_OUTPUT``, else ``./output`` under the working directory, as for
    every job's outputs: never the package's folder (site-packages, or the checkout). The tiny world
    (:mod:`.sizes`) defaults to ``demo_world_tiny/`` beside it, so neither size rebuilds the other.
    """
    from maskalign.config import default_output_root

    from .sizes import world_size

    env = os.environ.get(ROOT_ENV)
    if env:
        return Path(env).expanduser()
    return Path(default_output_root()) / ("demo_world" if world_size() == "full" else f"demo_world_{world_size()}")


def resolve_root(root: str | os.PathLike | None) -> Path:
    return default_root() if root is None else Path(root)
