"""Stand-in transfer tasks for the pipeline tests: the task contract, none of the work.

Registered here only (no library file names them), imported as ``fake_transfer`` with ``tests/``
on the path (``--pipeline NAME=fake_transfer``; a job finds it through ``PYTHONPATH``).
Each writes ``started.json`` (when it started, what it consumed) and returns its metrics and a
product checkpoint (the job writes a real ``record.json`` naming it), so that a downstream task
can consume it; ``fail=1`` among its overrides makes it fail. No torch: it starts fast.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from maskalign.records import checkpoint_ref
from maskalign.tasks import RunContext, Task, register_task

SCORE = "score"


class FakeTask(Task):
    description = "a stand-in transfer task"
    metrics = (SCORE,)

    def source_record(self, ctx: RunContext) -> tuple[dict[str, Any], dict[str, str], dict[str, Any]]:
        return {"method": "fake", "backbone": "vit_tiny", "supervision": "none"}, checkpoint_ref(ctx.spec.ckpt), {}

    def run(self, ctx: RunContext) -> dict[str, Any]:
        spec = ctx.spec
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
        print(f"fake_transfer: {self.name}/{spec.run} consumed {ckpt}")
        return {"metrics": {SCORE: float(kv.get("score", 1.0))}, "checkpoint": str(product)}


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
