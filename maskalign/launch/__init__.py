"""The one launcher every entry script uses: SLURM through submitit, or this machine.

* :mod:`.flags`: the cluster flags (``add_launcher_args``) and the request they describe (``ClusterSpec``);
* :mod:`.slurm`: ``sinfo`` probing, submission, the dry-run sbatch script, ``job.json``;
* :mod:`.runtime`: what runs inside the job (``JobTask``, the requeue signal, ``Checkpointable``);
* :mod:`.dispatch`: ``launch``/``launch_array``, which return one :class:`LaunchResult`.

Layout: a job's own outputs go to its run folder ``OUTPUT/<kind>/<run>/``; the launcher puts
``job.json`` there and submitit's files in ``OUTPUT/<kind>/<run>/submitit/<job id>/``.
"""

from maskalign.launch.dispatch import DRY_RUN, LOCAL, SLURM, LaunchResult, launch, launch_array
from maskalign.launch.flags import (
    ClusterSpec,
    add_launcher_args,
    get_args_parser,
    parse_time_minutes,
)
from maskalign.launch.runtime import Checkpointable, JobTask
from maskalign.launch.slurm import ARRAYS_DIR, JOB_INFO, read_job_info, slurm_available, use_slurm

__all__ = [
    "ARRAYS_DIR", "DRY_RUN", "JOB_INFO", "LOCAL", "SLURM", "Checkpointable", "ClusterSpec", "JobTask",
    "LaunchResult", "add_launcher_args", "get_args_parser", "launch", "launch_array",
    "parse_time_minutes", "read_job_info", "slurm_available", "use_slurm",
]
