"""The pre-trained encoder a transfer job consumes, and the record it writes about it.

Every transfer job (fine-tuning, linear probe, COCO, ADE20K, robustness) starts from a checkpoint
of any pre-training objective, and its record inherits what the tables group by (method,
backbone, supervision, ratios, epochs, paper row) from that checkpoint's metadata, so that no
table cell is typed by hand.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from maskalign.checkpoint import load_encoder_state
from maskalign.records import Record, checkpoint_ref, now_iso, write_record


@dataclass
class PretrainedEncoder:
    path: Path
    state: dict[str, torch.Tensor]
    meta: dict[str, Any]
    ref: dict[str, str] = field(default_factory=dict)

    @property
    def arch(self) -> dict[str, Any]:
        return self.meta["arch"]


def load_pretrained(path: str | Path) -> PretrainedEncoder:
    """Encoder tensors + metadata of any supported checkpoint; one-line ``CheckpointError`` otherwise."""
    state, meta = load_encoder_state(path)
    return PretrainedEncoder(Path(path), state, meta, checkpoint_ref(path))


class TransferRecorder:
    """Times a transfer job and writes its record, inheriting the pre-training metadata."""

    def __init__(self, task: str, run_name: str, source: PretrainedEncoder, config: dict[str, Any]) -> None:
        self.task, self.run_name, self.source, self.config = task, run_name, source, config
        self.start, self._t0 = now_iso(), time.time()

    def write(self, out_dir: str | Path, metrics: dict[str, float], checkpoint: str | Path | None = None) -> Path:
        m = self.source.meta
        return write_record(out_dir, Record(
            run_id=f"{self.task}/{self.run_name}", task=self.task, method=m.get("method", "unknown"),
            backbone=m.get("backbone", "unknown"), supervision=m.get("supervision", "unknown"),
            forward_ratio=m.get("forward_ratio"), reconstruct_ratio=m.get("reconstruct_ratio"),
            pt_epochs=m.get("pt_epochs"), paper_ref=m.get("paper_ref"),
            metrics={k: float(v) for k, v in metrics.items()},
            checkpoint=checkpoint_ref(checkpoint) if checkpoint else None,
            source_checkpoint=self.source.ref, config=self.config, start_time=self.start,
            wall_time_s=time.time() - self._t0))
