"""Pre-training as a task: what the launcher runs, on SLURM or on this machine.

``PretrainTask`` is picklable (it holds the resolved config as a plain dict and imports torch
only when called) and requeues itself on preemption or time-out: the requeued job calls the same
task, and the engine resumes from the newest complete checkpoint in the run folder, restoring
the optimizer, the step and every RNG state, so the losses continue as if never interrupted.
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

    def validate(self) -> None:
        """Checks the launcher runs before sbatch: data root, teacher checkpoint, run folder (runfolder edit)."""
        from omegaconf import OmegaConf

        from maskalign.engine.preflight import validate

        validate(OmegaConf.create(self.cfg))

    def checkpoint(self, *args: Any, **kwargs: Any):
        """Called by submitit in the job before it requeues it: run this task again."""
        import submitit

        return submitit.helpers.DelayedSubmission(PretrainTask(self.cfg))

    def __repr__(self) -> str:
        return f"PretrainTask({self.cfg.get('name')!r})"
