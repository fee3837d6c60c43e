"""The pre-training engine end to end on the demo world: learning, exact resume, exports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import pretrain_cfg

from maskalign.checkpoint import build_timm_vit, load_encoder_state, load_file

pytestmark = pytest.mark.slow


def _losses(out: Path) -> list[float]:
    return [json.loads(ln)["loss"] for ln in (out / "log.jsonl").read_text().splitlines() if ln.strip()]


def test_short_pretraining_lowers_alignment_loss(full_demo_encoder: Path) -> None:
    losses = _losses(full_demo_encoder.parent)
    # the default run, one line per epoch
    assert len(losses) == int(pretrain_cfg(full_demo_encoder.parent).optim.epochs)
    assert losses[-1] < 0.8 * losses[0], losses


def test_outputs_of_a_run(full_demo_encoder: Path) -> None:
    out = full_demo_encoder.parent
    for name in ("checkpoint.pth", "encoder.pth", "encoder.json", "pretrain_model.pth", "log.jsonl",
                 "config.yaml", "record.json"):
        assert (out / name).is_file(), name
    ckpt = load_file(out / "checkpoint.pth")
    assert not any(k.startswith("teacher.") for k in ckpt["model"]), "the frozen teacher must not be saved"
    assert {"model", "optimizer", "epoch", "step", "config", "rng", "meta"} <= set(ckpt)
    enc = torch.load(full_demo_encoder, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in enc.values())
    assert not any(k.startswith(("da.", "teacher.", "decoder")) for k in enc)
    state, meta = load_encoder_state(full_demo_encoder)
    model = build_timm_vit(meta["arch"], state)  # strict on encoder keys
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, meta["arch"]["embed_dim"])
    record = json.loads((out / "record.json").read_text())
    assert record["task"] == "pretrain" and record["method"] == "maskalign"
    assert record["forward_ratio"] == pytest.approx(int(64 * 0.3) / 64)
    assert record["reconstruct_ratio"] == 0.0
    full = torch.load(out / "pretrain_model.pth", weights_only=True)
    assert "da.weight" in full and "encoder.cls_token" in full


def test_resume_reproduces_an_uninterrupted_run(tmp_path: Path, tiny_demo_world: Path) -> None:
    from maskalign.engine.pretrain import train

    # the tiny world at batch 16: 5 steps an epoch, two DataLoader workers whose RNG must resume too
    common = ("optim.warmup_epochs=1", "data.num_workers=2", "runtime.max_steps=null", "optim.total_batch_size=16")
    straight = pretrain_cfg(tmp_path / "a", "name=r", "optim.epochs=3", *common)
    train(straight)
    # Stop after two epochs as a preempted job would, then run the same config again.
    two = pretrain_cfg(tmp_path / "b", "name=r", "optim.epochs=3", *common)
    stopped = {"n": 0}

    def stop_after_two() -> bool:
        stopped["n"] += 1
        return stopped["n"] >= 2

    train(two, stop_flag=stop_after_two)
    out_b = tmp_path / "b" / "pretrain" / "r"
    saved = load_file(out_b / "checkpoint.pth")
    assert saved["epoch"] == 2
    train(pretrain_cfg(tmp_path / "b", "name=r", "optim.epochs=3", *common))
    resumed = load_file(out_b / "checkpoint.pth")
    assert resumed["epoch"] == 3
    assert _losses(tmp_path / "a" / "pretrain" / "r") == _losses(out_b)  # bit-identical on CPU
    a = load_file(tmp_path / "a" / "pretrain" / "r" / "checkpoint.pth")
    for k, v in a["model"].items():
        assert torch.equal(v, resumed["model"][k]), k
    # The optimizer state continued rather than restarted: its step count spans all three epochs.
    steps = {int(s["step"]) for s in resumed["optimizer"]["state"].values()}
    assert steps == {a["step"]}
