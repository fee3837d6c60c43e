"""One contract for every job, pre-training included: a job spec, a run context, a registry of tasks.

* :mod:`.spec`: :class:`JobSpec` (encoder, output root, run name, config, overrides, options)
  and the rules ``<output_root>/<task>/<run>/`` and ``<source run>-<config>``;
* :mod:`.registry`: :class:`Task`, ``@register_task``, ``get_task``, ``registered_tasks`` (built-ins
  and installed plug-ins);
* :mod:`.context`: :class:`RunContext`, what a task's ``run(ctx)`` gets: folder, config, ranks,
  source, logging; its returned metrics become the record;
* :mod:`.job`: :class:`TaskJob`, what the launcher submits for any task (entry script or pipeline),
  and ``job_for``, the same job made without a command line.

The entry scripts share :mod:`maskalign.transfer.cli`; the pipeline (:mod:`maskalign.pipeline`)
submits the same ``TaskJob`` objects.
"""

from maskalign.tasks.context import RunContext
from maskalign.tasks.identity import default_run_name, source_name
from maskalign.tasks.job import TaskJob, job_for, upstream_checkpoint
from maskalign.tasks.registry import PRETRAIN, Task, get_task, register_task, registered_tasks
from maskalign.tasks.spec import JobSpec, run_folder

__all__ = [
    "PRETRAIN", "JobSpec", "RunContext", "Task", "TaskJob", "default_run_name", "get_task", "job_for",
    "register_task",
    "registered_tasks", "run_folder", "source_name", "upstream_checkpoint",
]
