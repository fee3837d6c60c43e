"""Linear probing parts: the LARS update by hand, and a head that is the only thing that learns."""

from __future__ import annotations

import pytest
import torch

from maskalign.transfer.classifier import build_classifier
from maskalign.transfer.lars import LARS

ARCH = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2, "mlp_ratio": 2.0}


def test_lars_step_by_hand() -> None:
    w = torch.nn.Parameter(torch.tensor([[3.0, 4.0]]))          # ||w|| = 5
    b = torch.nn.Parameter(torch.tensor([1.0, -1.0]))
    opt = LARS([w, b], lr=0.5, weight_decay=0.1, momentum=0.9, trust_coefficient=0.001)
    w.grad = torch.tensor([[0.7, -0.4]])
    b.grad = torch.tensor([0.2, 0.2])
    opt.step()
    u = torch.tensor([[0.7, -0.4]]) + 0.1 * torch.tensor([[3.0, 4.0]])   # grad + wd * w
    q = 0.001 * 5.0 / u.norm()
    assert torch.allclose(w.detach(), torch.tensor([[3.0, 4.0]]) - 0.5 * q * u)
    assert torch.allclose(b.detach(), torch.tensor([1.0, -1.0]) - 0.5 * torch.tensor([0.2, 0.2]))  # 1-D: plain SGD
    # second step: momentum buffer mu = 0.9 * mu + update
    w_before, mu1 = w.detach().clone(), q * u
    w.grad = torch.tensor([[0.7, -0.4]])
    b.grad = torch.zeros(2)
    opt.step()
    u2 = torch.tensor([[0.7, -0.4]]) + 0.1 * w_before
    q2 = 0.001 * w_before.norm() / u2.norm()
    assert torch.allclose(w.detach(), w_before - 0.5 * (0.9 * mu1 + q2 * u2), atol=1e-7)


def test_lars_zero_weight_keeps_raw_update() -> None:
    w = torch.nn.Parameter(torch.zeros(2, 2))
    opt = LARS([w], lr=1.0, momentum=0.0)
    w.grad = torch.ones(2, 2)
    opt.step()
    assert torch.allclose(w.detach(), -torch.ones(2, 2))


def test_probe_head_is_bn_then_linear_and_alone_trainable() -> None:
    model = build_classifier(ARCH, 5, kind="linprobe", global_pool="token", head_init_std=0.01)
    bn, fc = model.head[0], model.head[1]
    assert isinstance(bn, torch.nn.BatchNorm1d) and not bn.affine and bn.eps == pytest.approx(1e-6)
    assert isinstance(fc, torch.nn.Linear) and fc.weight.std() < 0.05
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["head.1.weight", "head.1.bias"]
    x = torch.randn(4, 3, 32, 32)
    model.train()
    model(x).sum().backward()
    assert model.blocks[0].attn.qkv.weight.grad is None and fc.weight.grad is not None
