"""A worker task that never ends (importable by spawned and forkserver workers)."""

from __future__ import annotations

import os
import time
from pathlib import Path


def stuck(task: tuple[str, int]) -> int:
    folder, i = task
    Path(folder, f"worker-{os.getpid()}").write_text(str(i))
    time.sleep(3600)
    return i
