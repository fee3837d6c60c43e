"""The one autocast policy (``maskalign.amp``) and the one device resolver (``maskalign.distributed``)."""

from __future__ import annotations

import pytest
import torch

from maskalign.amp import autocast
from maskalign.distributed import resolve_device
from maskalign.errors import UserError


@pytest.mark.parametrize("amp,enabled", [("auto", False), ("none", False), ("bf16", True)])
def test_cpu_autocast_policy(amp: str, enabled: bool) -> None:
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with autocast(torch.device("cpu"), amp):
        out = a @ b
    # what autocast actually did to a matmul, not what the context says of itself
    assert out.dtype == (torch.bfloat16 if enabled else torch.float32)


@pytest.mark.parametrize("amp,expected", [("auto", {"dtype": torch.bfloat16}), ("bf16", {"dtype": torch.bfloat16}),
                                          ("none", {"enabled": False})])
def test_cuda_policy(monkeypatch: pytest.MonkeyPatch, amp: str, expected: dict) -> None:
    # No GPU here: record what the policy asks torch for on a CUDA device.
    monkeypatch.setattr(torch, "autocast", lambda device_type, **kw: (device_type, kw))
    assert autocast(torch.device("cuda", 0), amp) == ("cuda", expected)


def test_unknown_amp_is_refused_in_one_line() -> None:
    with pytest.raises(UserError, match="amp: unknown 'fp16'; use auto, bf16, none"):
        autocast(torch.device("cpu"), "fp16")


def test_resolve_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu") and resolve_device(None) == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(UserError, match=r"^train.device=cuda:1 but no CUDA device is visible; add train.device=cpu"):
        resolve_device("cuda:1", key="train.device")
    with pytest.raises(UserError, match=r"^runtime.device: unknown device 'tpu'"):
        resolve_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
