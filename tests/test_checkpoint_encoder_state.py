"""``load_encoder_state`` (teachers from this project's files, attention figures, preflight) reads the
encoder out of a training checkpoint: an ``encoder.`` (or DDP's ``module.``) prefix stripped, other parts left."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from maskalign.checkpoint import load_encoder_state
from maskalign.models import build_vit


@pytest.mark.parametrize("prefix", ["encoder.", "module."])
def test_training_checkpoint_gives_exactly_the_students_tensors(tmp_path: Path, prefix: str) -> None:
    torch.manual_seed(0)
    student = build_vit("vit_tiny_demo", img_size=64, patch_size=8)
    state = {f"{prefix}{k}": v for k, v in student.state_dict().items()}
    state.update({"teacher.blocks.0.attn.qkv.weight": torch.zeros(3, 3), "decoder_embed.weight": torch.zeros(4, 4),
                  "da.weight": torch.zeros(2, 6)})
    torch.save({"model": state, "epoch": 3, "meta": {"arch": student.arch()}}, tmp_path / "checkpoint.pth")
    enc, _ = load_encoder_state(tmp_path / "checkpoint.pth")
    assert set(enc) == set(student.state_dict())
    for k, v in student.state_dict().items():
        assert torch.equal(enc[k], v), k
