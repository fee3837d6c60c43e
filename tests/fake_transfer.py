"""Stand-in transfer tasks for the pipeline tests: the task contract, none of the work.

Registered here only (no library file names them), imported as ``fake_transfer`` with ``tests/``
on the path (``--pipeline NAME=fake_transfer``; a job finds it through ``PYTHONPATH``).
Each writes ``started.json`` (when it started, what it consumed) and a real ``record.json``
naming a product checkpoint, so that a downstream task can consume it; ``fail=1`` among its
overrides makes it fail. No torch: it starts fast.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from maskalign.records import Record, checkpoint_ref, write_record
from maskalign.tasks import JobSpec, Task, register_task

SCORE = "score"


class FakeTask(Task):
    description = "a stand-in transfer task"
    metrics = (SCORE,)

    def run(self, spec: JobSpec) -> dict[str, Any]:
        kv = dict(o.split("=", 1) for o in spec.overrides)
        ckpt = Path(str(spec.ckpt))
        out = spec.folder
        out.mkdir(parents=True, exist_ok=True)
        started = {"time": time.time(), "ckpt": str(ckpt), "ckpt_exists": ckpt.is_file(),
                   "ckpt_mtime": ckpt.stat().st_mtime if ckpt.is_file() else None,
                   "slurm_job_id": os.environ.get("SLURM_JOB_ID"), "local": "SLURM_JOB_ID" not in os.environ}
        (out / "started.json").write_text(json.dumps(started))
        if kv.get("fail") == "1" or not ckpt.is_file():
            raise RuntimeError(f"fake task {self.name}: failing on purpose (ckpt exists: {ckpt.is_file()})")
        product = out / "product.pth"
        product.write_bytes(b"not a real checkpoint")
        record = write_record(out, Record(
            run_id=f"{self.name}/{spec.run}", task=self.name, method="fake", backbone="vit_tiny",
            supervision="none", metrics={SCORE: float(kv.get("score", 1.0))}, checkpoint=checkpoint_ref(product),
            source_checkpoint=checkpoint_ref(ckpt)))
        print(f"fake_transfer: {self.name}/{spec.run} consumed {ckpt}")
        return {"metrics": {SCORE: 1.0}, "record": str(record)}


@register_task
class FakeA(FakeTask):
    name = "fake_a"


@register_task
class FakeB(FakeTask):
    name = "fake_b"
    consumes = "fake_a"


@register_task
class FakeC(FakeTask):
    name = "fake_c"


@register_task
class FakeD(FakeTask):
    name = "fake_d"
    consumes = "fake_c"


@register_task
class Probe(FakeTask):
    name = "probe"


@register_task
class LoopX(FakeTask):
    name = "loop_x"
    consumes = "loop_y"


@register_task
class LoopY(FakeTask):
    name = "loop_y"
    consumes = "loop_x"
