"""Pre-training as a task: what the launcher runs, on SLURM or on this machine.

``PretrainTask`` is picklable (it holds the resolved config as a plain dict and imports torch
only when called) and requeues itself on preemption or time-out (``Checkpointable``): the
requeued job calls the same task, and the engine resumes from the newest complete checkpoint in
the run folder, restoring the optimizer, the step and every RNG state, so the losses continue as
if never interrupted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from maskalign.launch.runtime import Checkpointable

KIND = "pretrain"


class PretrainTask(Checkpointable):
    """``PretrainTask(cfg)()`` trains ``cfg`` (a resolved config as a plain dict) and returns the engine's summary."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg

    @property
    def run_folder(self) -> Path:
        """``<output_dir>/pretrain/<name>/``, where the engine writes."""
        return Path(str(self.cfg["output_dir"])) / KIND / str(self.cfg["name"])

    def __call__(self) -> dict[str, Any]:
        from omegaconf import OmegaConf

        from maskalign.engine.pretrain import train

        return train(OmegaConf.create(self.cfg))

    def validate(self) -> None:
        """The checks the launcher runs before sbatch: data root, teacher checkpoint, run folder."""
        from omegaconf import OmegaConf

        from maskalign.engine.preflight import validate

        validate(OmegaConf.create(self.cfg))

    def __repr__(self) -> str:
        return f"PretrainTask({self.cfg.get('name')!r})"
