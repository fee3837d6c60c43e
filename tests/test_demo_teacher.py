"""The demo teacher: a token-grid CNN behind the same interface as CLIP, and good enough to teach."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from maskalign.teachers import build_teacher
from maskalign.teachers.demo_teacher import DEMO_TEACHER_ARCH, LABEL, is_token_cnn, load_demo_teacher
from maskalign.teachers.token_cnn import TokenCNN, TokenCNNTeacher


def _teacher(seed: int = 0) -> TokenCNNTeacher:
    torch.manual_seed(seed)
    model = TokenCNN(DEMO_TEACHER_ARCH, 10)
    with torch.no_grad():
        model.pool_query.normal_()  # zeros at init would make the pooling uniform
    return TokenCNNTeacher(model, "t")


def test_levels_are_tokens_on_the_student_grid_with_a_pooled_cls_slot() -> None:
    t = _teacher()
    x = torch.randn(3, 3, 64, 64)
    out = t(x, [0, 3, 5])
    assert set(out.hidden) == {0, 3, 5}
    for i, h in out.hidden.items():
        assert h.shape == (3, 1 + 64, 128)
    assert out.cls_attn.shape == (3, 64)
    assert torch.allclose(out.cls_attn.sum(1), torch.ones(3), atol=1e-5)
    # the [CLS] slot of every level is that level's tokens pooled with the [CLS] attention
    for h in out.hidden.values():
        pooled = (out.cls_attn.unsqueeze(-1) * h[:, 1:]).sum(1)
        assert torch.allclose(h[:, 0], pooled, atol=1e-5)
    # tokens are row-major over the grid: token (r, c) sees the image around patch (r, c)
    y = x.clone()
    y[:, :, :8, 56:] += 5.0  # perturb the top-right patch only
    d = (t(y, [0]).hidden[0][:, 1:] - out.hidden[0][:, 1:]).abs().sum(-1).mean(0).view(8, 8)
    assert d[0, 7] > 0 and d[4:, :4].max() == 0  # the far corner of the grid is untouched


def test_frozen_eval_and_no_grad() -> None:
    t = _teacher()
    t.train()
    assert not t.training and not t.model.training
    assert not any(p.requires_grad for p in t.parameters())
    out = t(torch.randn(2, 3, 64, 64), [5])
    assert not out.hidden[5].requires_grad


def test_saved_teacher_loads_through_the_local_backend(tmp_path: Path) -> None:
    t = _teacher(1)
    path = tmp_path / "encoder.pth"
    torch.save(t.model.state_dict(), path)
    path.with_suffix(".json").write_text(json.dumps({"arch": DEMO_TEACHER_ARCH, "num_classes": 10, "label": LABEL}))
    assert is_token_cnn(path)
    cfg = OmegaConf.create({"backend": "local", "name": None, "pretrained": None, "checkpoint": str(path),
                            "input_size": None, "label": None})
    loaded = build_teacher(cfg, 64)
    assert isinstance(loaded, TokenCNNTeacher) and loaded.label == LABEL and loaded.depth == 6
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(loaded(x, [2]).hidden[2], t(x, [2]).hidden[2])


def test_a_file_that_does_not_fit_is_one_line(tmp_path: Path) -> None:
    from maskalign.checkpoint import CheckpointError

    path = tmp_path / "encoder.pth"
    torch.save({"stem.0.weight": torch.zeros(1)}, path)
    path.with_suffix(".json").write_text(json.dumps({"arch": DEMO_TEACHER_ARCH, "num_classes": 10}))
    with pytest.raises(CheckpointError, match="does not fit the demo teacher"):
        load_demo_teacher(path)


@pytest.mark.slow
def test_the_cached_demo_teacher_knows_the_shapes(full_demo_teacher: Path) -> None:
    """The first run's teacher must be worth distilling: well above chance (10%) on the demo val split."""
    meta = json.loads(full_demo_teacher.with_suffix(".json").read_text())
    assert meta["arch"]["kind"] == "token_cnn"
    assert meta["val_top1"] > 40.0, meta  # about 70 here; a ViT in the same minute stays under 25


def test_a_cached_teacher_serves_only_the_world_size_it_was_trained_for(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The tiny world's teacher (seconds of training) must never stand in for the full one's."""
    import maskalign.data.demo_world as world
    from maskalign.teachers import demo_teacher

    imagenet = tmp_path / "imagenet"
    imagenet.mkdir()
    monkeypatch.setattr(world, "ensure_imagenet", lambda root=None: imagenet)
    calls = []

    def fake_training(data: Path, out: Path, epochs: int, corpus: int) -> dict:
        calls.append((epochs, corpus))
        meta = {"version": demo_teacher.VERSION, "epochs": epochs, "corpus_images": corpus, "val_top1": 0.0}
        out.mkdir(parents=True, exist_ok=True)
        (out / "encoder.pth").write_bytes(b"weights")
        (out / "encoder.json").write_text(json.dumps(meta))
        return meta

    monkeypatch.setattr(demo_teacher, "train_demo_teacher", fake_training)
    monkeypatch.setenv("MASKALIGN_DEMO_SIZE", "tiny")
    assert demo_teacher.ensure_demo_teacher() == demo_teacher.ensure_demo_teacher() == tmp_path / "teacher/encoder.pth"
    assert calls == [(2, 256)]  # the tiny preset, trained once then cached
    monkeypatch.setenv("MASKALIGN_DEMO_SIZE", "full")
    demo_teacher.ensure_demo_teacher()
    demo_teacher.ensure_demo_teacher()
    assert calls == [(2, 256), (12, 3000)]  # retrained at the full size, then cached
