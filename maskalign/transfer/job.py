"""What every classification transfer job does around its loop: folders, seeds, source, record.

A job's folder is ``<output_dir>/<task>/<name>/`` (:func:`maskalign.tasks.spec.run_folder`)
holding ``config.yaml`` (resolved), its checkpoints, ``log.jsonl`` and, when it has finished,
``record.json``. The record inherits the pre-training metadata of the source checkpoint (method,
backbone, ratios, epochs), except for a run from random initialisation, which is recorded as method ``scratch``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from maskalign.config import save_config, to_plain
from maskalign.distributed import DistInfo, init_distributed
from maskalign.engine.rng import seed_everything
from maskalign.metric_names import Metric
from maskalign.runfolder.lock import take_folder
from maskalign.tasks.spec import run_folder
from maskalign.transfer.source import PretrainedEncoder, TransferRecorder, load_pretrained


def run_dir(cfg: Any, task: str) -> Path:
    """The job's folder, by the one rule of every task: ``<output_dir>/<task>/<name>/``."""
    return run_folder(str(cfg.output_dir), task, str(cfg.name))


@dataclass
class Job:
    task: str
    cfg: Any
    info: DistInfo
    out: Path
    source: PretrainedEncoder
    recorder: TransferRecorder

    def finish(self, result: dict[str, Any]) -> dict[str, Any]:
        """Record a classifier loop's result (last and best val top-1/top-5) and return it with them."""
        if self.info.is_main:
            last, best = result["last"], result["best"]
            metrics = {Metric.TOP1: last["top1"], Metric.TOP5: last["top5"], Metric.BEST_TOP1: best["top1"],
                       Metric.BEST_EPOCH: best.get("epoch", 0)}
            result["record"] = str(self.recorder.write(self.out, metrics, checkpoint=result["checkpoint"]))
            result["metrics"] = metrics
        result["out_dir"] = str(self.out)
        return result


def start_job(task: str, cfg: Any, ckpt: str | Path, dist_info: DistInfo | None = None,
              pretrained: bool = True) -> Job:
    """Set up process group, folder, seed and source; ``pretrained=False`` records a scratch baseline."""
    info = dist_info or init_distributed(cfg.runtime.device)
    out = run_dir(cfg, task)
    if info.is_main:
        take_folder(out)  # runfolder edit: one writer, stale temps removed, I/O failures in one line
        save_config(cfg, out / "config.yaml")
    seed_everything(int(cfg.seed) + info.rank)
    source = load_pretrained(ckpt)
    as_recorded = source
    if not pretrained:
        as_recorded = replace(source, meta={**source.meta, "method": "scratch", "supervision": "none",
                                            "pt_epochs": 0, "forward_ratio": None, "reconstruct_ratio": None})
    recorder = TransferRecorder(task, str(cfg.name), as_recorded, {**to_plain(cfg), "ckpt": str(ckpt)})
    return Job(task, cfg, info, out, source, recorder)
