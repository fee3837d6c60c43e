"""The demo config end to end on CPU: train, resume, evaluate, record (``slow``: about 2 minutes)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from ade20k_helpers import fabricate_encoder, require_mmseg, run_cli

require_mmseg()

# A short schedule on the first 4 demo images: with a randomly initialised encoder the full demo
# set needs far more than a test's budget before the loss moves (shapes must be learned from
# scratch), while 4 images are fitted within 40 steps, which is what shows that the whole path
# (conversion, data, heads, optimizer groups, schedule) learns. Validation on 16 images.
COMMON = ["optim_wrapper.optimizer.lr=1e-3", "param_scheduler.0.end=5", "param_scheduler.1.begin=5",
          "param_scheduler.1.end=40", "train_cfg.val_interval=40", "default_hooks.logger.interval=5",
          "default_hooks.checkpoint.interval=20", "+train_dataloader.dataset.indices=4",
          "+val_dataloader.dataset.indices=16", "+test_dataloader.dataset.indices=16"]


def _scalars(work: Path) -> list[dict]:
    rows = []
    for f in sorted(work.glob("*/vis_data/scalars.json")):
        rows += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    return rows


@pytest.mark.slow
def test_tiny_config_trains_resumes_evaluates_and_records(tmp_path: Path) -> None:
    ckpt, _ = fabricate_encoder(tmp_path / "pretrain")
    out = tmp_path / "output"
    args = ["--ckpt", str(ckpt), "--output-dir", str(out), "--name", "demo", *COMMON]

    first = run_cli(*args, "train_cfg.max_iters=20", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    work = out / "ade20k" / "demo"
    assert (work / "backbone_init.pth").is_file() and (work / "iter_20.pth").is_file()

    # Same run, longer schedule: continues from iteration 20 instead of starting over.
    second = run_cli(*args, "train_cfg.max_iters=40", cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed epoch: 0, iter: 20" in second.stdout
    assert "Done. mIoU" in second.stdout

    train = [r for r in _scalars(work) if "decode.loss_ce" in r]
    steps = [r["step"] for r in train]
    assert steps == sorted(set(steps)) and steps[-1] == 40 and min(s for s in steps if s > 20) == 25
    loss = [r["decode.loss_ce"] for r in train]
    assert all(math.isfinite(v) and v < 10 for v in loss)
    assert sum(loss[-2:]) / 2 < 0.85 * sum(loss[:2]) / 2, loss

    record = json.loads((work / "record.json").read_text())
    assert record["task"] == "ade20k" and record["run_id"] == "ade20k/demo"
    assert record["method"] == "maskalign" and record["backbone"] == "ViT-demo/8"
    assert record["forward_ratio"] == 0.3 and record["pt_epochs"] == 1
    assert set(record["metrics"]) == {"miou", "aacc", "macc"}
    assert all(0.0 <= v <= 100.0 for v in record["metrics"].values())
    assert record["checkpoint"]["path"].endswith("iter_40.pth")
    assert record["source_checkpoint"]["path"] == str(ckpt.resolve())
    assert record["config"]["num_classes"] == 10 and record["config"]["max_iters"] == 40
    assert record["config"]["paramwise_cfg"] == {"num_layers": 6, "layer_decay_rate": 0.65}
    trained_metrics = record["metrics"]

    # --eval-only re-evaluates the finished model: same numbers, training description kept.
    third = run_cli(*args, "--eval-only", cwd=tmp_path)
    assert third.returncode == 0, third.stderr[-3000:]
    record = json.loads((work / "record.json").read_text())
    assert record["metrics"] == pytest.approx(trained_metrics)
    assert record["config"]["eval_only"] is True and record["config"]["max_iters"] == 40
    assert record["config"]["evaluated_weights"].endswith("iter_40.pth")
