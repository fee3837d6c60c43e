"""A run folder's own bookkeeping: one writer at a time, its state history, and preemption.

* :mod:`~maskalign.runfolder.lock`: ``run.lock`` names the one process (host, pid, SLURM job) that
  may write the folder; a second writer is refused in one line, a stale lock is taken over.
* :mod:`~maskalign.runfolder.history`: ``status.jsonl``, an append-only list of what happened
  (submitted, started, stopped, finished, failed), so ``python -m maskalign.jobs status`` can
  tell the truth after SLURM has forgotten a job.
* :mod:`~maskalign.runfolder.resume`: pre-training's folder policy across starts (a finished run
  left alone, restart sets outputs aside, resume only under the same config, unreadable checkpoints
  set aside);
* :mod:`~maskalign.runfolder.faults`: named fault-injection points, so tests never race a job;
* :mod:`~maskalign.runfolder.preempt`: the requeue and termination signals only set a stop flag;
  the training loop checkpoints at the next iteration boundary and then requeues or exits.
"""
