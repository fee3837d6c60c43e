"""The COCO job as a task for the shared launcher (``maskalign.launcher.launch``).

Picklable (it holds only :class:`~maskalign.detection.train.JobOptions`, and imports detectron2
when called). On preemption or time-out submitit calls :meth:`CocoTask.checkpoint`, which requeues
the same task; detectron2's checkpointer then resumes from ``<out>/last_checkpoint``.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from maskalign.detection.train import JobOptions


class CocoTask:
    def __init__(self, opts: JobOptions) -> None:
        self.opts = opts
        self.cfg = asdict(opts)  # what the launcher's --dry-run prints

    def __call__(self) -> dict[str, Any]:
        from maskalign.detection.train import run_job

        return run_job(self.opts)

    def checkpoint(self, *args: Any, **kwargs: Any):
        import submitit

        return submitit.helpers.DelayedSubmission(CocoTask(self.opts))
