"""The ADE20K job as a launcher task: picklable, light, and requeued on preemption.

``SegTask`` holds a :class:`~maskalign.segmentation.train.SegJobSpec` as a plain dict and imports
mmseg only when called, so submitit pickles a small object. On preemption or time-out submitit
calls :meth:`SegTask.checkpoint`, which resubmits the same task; the resumed run finds mmengine's
``last_checkpoint`` in its folder and continues from there (``resume=True``).
"""

from __future__ import annotations

from typing import Any


class SegTask:
    """Runs one :class:`~maskalign.segmentation.train.SegJobSpec`, given as a plain dict (``cfg``,
    the name the launcher's ``--dry-run`` prints)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.cfg = dict(spec)

    def __call__(self) -> dict[str, Any]:
        from maskalign.segmentation.train import SegJobSpec, run

        return run(SegJobSpec(**self.cfg))

    def checkpoint(self, *args: Any, **kwargs: Any):
        import submitit

        return submitit.helpers.DelayedSubmission(SegTask(self.cfg))
