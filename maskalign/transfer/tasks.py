"""Transfer jobs as launcher tasks: picklable, light, and requeued on preemption.

A task holds the resolved config as a plain dict and the checkpoint path, and imports its engine
only when called, so submitit pickles a few kilobytes. On preemption or time-out submitit calls
``checkpoint()``, which resubmits the same task; the engine then resumes from the newest
``checkpoint.pth`` in the run folder.
"""

from __future__ import annotations

import importlib
from typing import Any

ENGINES = {
    "finetune": "maskalign.transfer.finetune",
    "linprobe": "maskalign.transfer.linprobe",
    "robustness": "maskalign.transfer.robustness",
}


class TransferTask:
    """``TransferTask("finetune", cfg, ckpt)()`` runs ``maskalign.transfer.finetune.run(cfg, ckpt)``."""

    def __init__(self, task: str, cfg: dict[str, Any], ckpt: str) -> None:
        if task not in ENGINES:
            raise ValueError(f"unknown transfer task {task!r}; one of {sorted(ENGINES)}")
        self.task, self.cfg, self.ckpt = task, cfg, ckpt

    def __call__(self) -> dict[str, Any]:
        from omegaconf import OmegaConf

        engine = importlib.import_module(ENGINES[self.task])
        return engine.run(OmegaConf.create(self.cfg), self.ckpt)

    def checkpoint(self, *args: Any, **kwargs: Any):
        import submitit

        return submitit.helpers.DelayedSubmission(TransferTask(self.task, self.cfg, self.ckpt))
