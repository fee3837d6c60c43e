"""mmengine hooks of the ADE20K job (imported after mmseg)."""

from __future__ import annotations

from typing import Any

from mmengine.hooks import Hook


class ValMetricsTap(Hook):
    """Remembers the metrics of each validation this process runs, with the iteration it ran at."""

    priority = "LOWEST"

    def __init__(self) -> None:
        self.last: tuple[int, dict[str, float]] | None = None

    def after_val_epoch(self, runner: Any, metrics: dict[str, float] | None = None) -> None:
        if metrics:
            self.last = (runner.iter, dict(metrics))
