"""The pure-PyTorch stand-ins for mmcv.ops: exact where they compute, one clear line where they cannot."""

from __future__ import annotations

import pytest
import torch
from ade20k_helpers import require_mmseg

require_mmseg()

from maskalign.segmentation import mmcv_ops_shim
from maskalign.segmentation.mmcv_ops_shim import CompiledOpMissing, point_sample, sigmoid_focal_loss


def test_point_sample_reads_pixel_centres_exactly() -> None:
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    ys, xs = torch.meshgrid(torch.arange(4), torch.arange(5), indexing="ij")
    pts = torch.stack([(xs + 0.5) / 5, (ys + 0.5) / 4], dim=-1).reshape(1, -1, 2).expand(2, -1, -1)
    out = point_sample(x, pts)  # (N, C, P)
    torch.testing.assert_close(out, x.reshape(2, 3, -1))
    grid = point_sample(x, pts.reshape(2, 4, 5, 2))  # (N, C, Hp, Wp)
    torch.testing.assert_close(grid, x)


def test_point_sample_interpolates_bilinearly() -> None:
    x = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])
    out = point_sample(x, torch.tensor([[[0.5, 0.5]]]))  # halfway between all four centres
    assert out.item() == pytest.approx(1.5)


def test_sigmoid_focal_loss_matches_mmseg_pytorch_version() -> None:
    from mmseg.models.losses.focal_loss import py_sigmoid_focal_loss

    torch.manual_seed(0)
    logits = torch.randn(7, 5)
    target = torch.tensor([0, 4, 2, 5, 1, 3, 5])  # 5 = background: all classes negative
    onehot = torch.nn.functional.one_hot(target, 6)[:, :5].float()
    ref = py_sigmoid_focal_loss(logits, onehot, gamma=2.0, alpha=0.25, reduction="none")
    ours = sigmoid_focal_loss(logits, target, 2.0, 0.25, None, "none")
    torch.testing.assert_close(ours, ref)
    assert sigmoid_focal_loss(logits, target, 2.0, 0.25, None, "mean") == pytest.approx(float(ref.sum() / 7))
    w = torch.rand(5)
    weighted = sigmoid_focal_loss(logits, target, 2.0, 0.25, w, "none")
    torch.testing.assert_close(weighted[0], ours[0] * w[0])
    torch.testing.assert_close(weighted[3], ours[3])  # background rows keep weight 1


@pytest.mark.parametrize("op", ["CrissCrossAttention", "PSAMask", "DeformConv2d", "ModulatedDeformConv2d"])
def test_compiled_only_ops_name_themselves_and_the_fix(op: str) -> None:
    import mmcv.ops

    if not getattr(mmcv.ops, "__maskalign_stand_in__", False):
        pytest.skip("a compiled mmcv is installed; its real ops are in use")
    with pytest.raises(CompiledOpMissing, match=f"mmcv.ops.{op}: .*docs/ade20k.md"):
        getattr(mmcv.ops, op)(64, 64)


def test_stand_ins_are_not_installed_over_compiled_ops(monkeypatch) -> None:
    monkeypatch.setattr(mmcv_ops_shim, "compiled_ops_available", lambda: True)
    assert mmcv_ops_shim.install() is False


def test_mmseg_imported_the_stand_in() -> None:
    """mmseg's point-based head took its point_sample from the stand-in."""
    import mmseg.models.decode_heads.point_head as ph

    assert ph.point_sample is point_sample


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


def test_mmengine_checkpoints_load_weights_only(tmp_path) -> None:
    """Resume/eval files (HistoryBuffer, NumPy scalars) load; a pickle that would run code does not."""
    import numpy as np
    from mmengine.logging import HistoryBuffer
    from mmengine.runner.checkpoint import CheckpointLoader

    from maskalign.segmentation.compat import CheckpointError

    good = {"state_dict": {"w": torch.ones(2)},
            "message_hub": {"log_scalars": {"train/loss": HistoryBuffer([1.0, 2.0], [1, 1])},
                            "runtime_info": {"eta": np.float64(3.0)}}}
    torch.save(good, tmp_path / "good.pth")
    ck = CheckpointLoader.load_checkpoint(str(tmp_path / "good.pth"), map_location="cpu")
    assert torch.equal(ck["state_dict"]["w"], torch.ones(2))
    assert ck["message_hub"]["log_scalars"]["train/loss"].mean() == pytest.approx(1.5)
    torch.save({"state_dict": {}, "x": _Evil()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="evil.pth: it holds a Python object .* refused"):
        CheckpointLoader.load_checkpoint(str(tmp_path / "evil.pth"), map_location="cpu")
