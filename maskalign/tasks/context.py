"""The run context: everything a task's science needs from the suite, built once per job.

A task implements only ``run(ctx) -> {"metrics": ..., ...}``. The context gives it

* ``ctx.folder``: its run folder, by the one rule ``<output root>/<task>/<run>/``
  (:func:`maskalign.tasks.spec.run_folder`), taken (one writer, ``run.lock``) and cleaned of the
  temp files of killed writes before ``run`` is called, with the resolved ``config.yaml`` saved;
* ``ctx.config``: the resolved config (an OmegaConf node), where the task resolves one before launch;
* ``ctx.dist``: the process group, rank and device (:func:`maskalign.distributed.init_distributed`,
  created on first use from the config's ``runtime.device``);
* ``ctx.source``: the encoder it starts from, loaded on first use (:func:`maskalign.transfer.source.load_pretrained`);
* ``ctx.log(...)``: a line on rank 0, prefixed with the task's name;
* the record: :class:`~maskalign.tasks.job.TaskJob` writes ``record.json`` from the metrics the
  task returns, the source's metadata and ``ctx.record_config`` (what the task adds about itself),
  so no task writes records by hand and every record has the same shape.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from maskalign.errors import UserError
from maskalign.records import Record, checkpoint_ref, now_iso, write_record

if TYPE_CHECKING:
    from maskalign.distributed import DistInfo
    from maskalign.runfolder.lock import RunLock
    from maskalign.tasks.spec import JobSpec
    from maskalign.transfer.source import PretrainedEncoder

#: What a from-scratch baseline records instead of its source's pre-training.
SCRATCH_META = {"method": "scratch", "supervision": "none", "pt_epochs": 0, "forward_ratio": None,
                "reconstruct_ratio": None}


class RunContext:
    """One job of one task: its spec, run folder, config, process group, source and record."""

    def __init__(self, task: Any, spec: JobSpec, dist: DistInfo | None = None) -> None:
        """``task``: the registered :class:`~maskalign.tasks.registry.Task` whose run this is."""
        self.task, self.spec = task, spec
        self._dist = dist
        self._source: PretrainedEncoder | None = None
        self._lock: RunLock | None = None
        self.config: Any = None
        if spec.resolved is not None:
            from omegaconf import OmegaConf

            self.config = OmegaConf.create(spec.resolved)
        #: What the task adds to its record's ``config`` (besides the resolved config and the encoder).
        self.record_config: dict[str, Any] = {}
        #: Replaces fields of the source's metadata in the record (a from-scratch baseline: ``SCRATCH_META``).
        self.record_meta: dict[str, Any] = {}
        self.start_time, self._t0 = now_iso(), time.time()

    # -- where and who -------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The run's name (the last part of its folder)."""
        return self.spec.run

    @property
    def folder(self) -> Path:
        return self.spec.folder

    @property
    def dist(self) -> DistInfo:
        if self._dist is None:
            from maskalign.distributed import init_distributed

            device = "auto"
            if self.config is not None and "runtime" in self.config and "device" in self.config.runtime:
                device = str(self.config.runtime.device)
            self._dist = init_distributed(device)
        return self._dist

    @property
    def is_main(self) -> bool:
        """Rank 0, read from the environment when the process group is not set up yet."""
        if self._dist is not None:
            return self._dist.is_main
        from maskalign.distributed import process_env

        return process_env().rank == 0

    @property
    def source(self) -> PretrainedEncoder:
        if self._source is None:
            from maskalign.transfer.source import load_pretrained

            if self.spec.ckpt is None:
                raise ValueError(f"task {self.task.name} consumes no encoder")
            self._source = load_pretrained(self.spec.ckpt)
            if self.is_main:
                for line in self._source.describe():
                    self.log(line)
        return self._source

    @source.setter
    def source(self, value: PretrainedEncoder) -> None:
        """A task that adapts its source (a dense wrapper) records the adapted one."""
        self._source = value

    def log(self, message: str) -> None:
        if self.is_main:
            print(f"[{self.task.name}] {message}", flush=True)

    # -- the folder ------------------------------------------------------------------------------
    def open(self) -> None:
        """Take the run folder (rank 0): one writer, stale temps removed, ``config.yaml`` saved."""
        if not self.is_main:
            return
        from maskalign.runfolder.lock import take_folder

        self._lock = take_folder(self.folder)
        if self.config is not None:
            from maskalign.config import save_config

            save_config(self.config, self.folder / "config.yaml")

    def close(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # -- the record ------------------------------------------------------------------------------
    def write_record(self, metrics: dict[str, float], checkpoint: str | Path | None = None) -> Path:
        """``record.json`` of this run: the task's metrics beside its source's metadata (rank 0 only)."""
        return write_record(self.folder, self._record(metrics, checkpoint))

    def check_record(self) -> None:
        """Build the record the run will write, without metrics, so that source metadata a record
        cannot hold fails before the job runs, not after (one line naming the source)."""
        try:
            self._record({}, None)
        except ValueError as e:
            raise UserError(f"{self.spec.ckpt}: its pre-training metadata does not fit a record ({e})") from None

    def _record(self, metrics: dict[str, float], checkpoint: str | Path | None) -> Record:
        from maskalign.config import to_plain

        meta, ref, encoder = self.task.source_record(self)
        meta = {**meta, **self.record_meta}
        config = {**(to_plain(self.config) if self.config is not None else {}), "ckpt": str(self.spec.ckpt),
                  **self.record_config, "encoder": encoder}
        return Record(
            run_id=f"{self.task.name}/{self.name}", task=self.task.name, method=meta.get("method", "unknown"),
            backbone=meta.get("backbone", "unknown"), supervision=meta.get("supervision", "unknown"),
            forward_ratio=meta.get("forward_ratio"), reconstruct_ratio=meta.get("reconstruct_ratio"),
            pt_epochs=meta.get("pt_epochs"), paper_ref=meta.get("paper_ref"),
            metrics={str(k): float(v) for k, v in metrics.items()},
            checkpoint=checkpoint_ref(checkpoint) if checkpoint else None,
            source_checkpoint=ref, config=config, start_time=self.start_time,
            wall_time_s=time.time() - self._t0)

    def __repr__(self) -> str:
        return f"RunContext({self.task.name}/{self.name})"
