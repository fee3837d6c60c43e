"""Pre-training as a task: what a launcher runs, on SLURM or on this machine.

``PretrainTask`` is picklable (it holds the resolved config as a plain dict and imports torch
only when called), and requeues itself on preemption: the resumed task finds the newest
checkpoint in its output folder.
"""

from __future__ import annotations

from typing import Any


class PretrainTask:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg

    def __call__(self) -> dict[str, Any]:
        from omegaconf import OmegaConf

        from maskalign.engine.pretrain import train

        return train(OmegaConf.create(self.cfg))

    def checkpoint(self, *args: Any, **kwargs: Any):
        import submitit

        return submitit.helpers.DelayedSubmission(PretrainTask(self.cfg))
