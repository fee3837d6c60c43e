"""One contract for every transfer job: a job spec, a run-folder rule, a registry of tasks.

* :mod:`.spec`: :class:`JobSpec` (encoder, output root, run name, config, overrides, options)
  and the rules ``<output_root>/<task>/<run>/`` and ``<source run>-<config>``;
* :mod:`.registry`: :class:`Task`, ``@register_task``, ``get_task``, ``registered_tasks``;
* :mod:`.job`: :class:`TaskJob`, what the launcher submits for any task (entry script or pipeline).

The entry scripts share :mod:`maskalign.transfer.cli`; the pipeline (:mod:`maskalign.pipeline`)
submits the same ``TaskJob`` objects.
"""

from maskalign.tasks.job import TaskJob, upstream_checkpoint
from maskalign.tasks.registry import PRETRAIN, Task, TaskError, get_task, register_task, registered_tasks
from maskalign.tasks.spec import JobSpec, default_run_name, run_folder, source_run_of

__all__ = [
    "PRETRAIN", "JobSpec", "Task", "TaskError", "TaskJob", "default_run_name", "get_task", "register_task",
    "registered_tasks", "run_folder", "source_run_of", "upstream_checkpoint",
]
