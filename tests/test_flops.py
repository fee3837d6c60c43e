"""The speed benchmark's FLOP counter agrees with a hand count (a multiply-add = 2 FLOPs).

One ViT block on N tokens of width D, forward:
qkv 2*N*D*3D + attention scores and weighted sum 2*2*N^2*D + proj 2*N*D^2 + MLP 2*2*N*D*4D.
The counter must see the fused CPU attention kernel too (torch's own table has only the CUDA
kernels, so without the benchmark's extra formulas attention counts as 0 on CPU).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_pretrain_speed", REPO / "bench" / "pretrain_speed.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def bench():
    return _bench()


def block_flops(n: int, d: int, mlp_ratio: int = 4) -> int:
    qkv = 2 * n * d * 3 * d
    attn = 2 * 2 * n * n * d
    proj = 2 * n * d * d
    mlp = 2 * 2 * n * d * mlp_ratio * d
    return qkv + attn + proj + mlp


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("n,d,h", [(197, 192, 3), (59, 384, 6)])
def test_one_block_forward(bench, fused, n, d, h):
    from timm.models.vision_transformer import Block

    blk = Block(d, h, qkv_bias=True).eval()
    blk.attn.fused_attn = fused
    b = 2
    x = torch.randn(b, n, d)
    with torch.no_grad():
        got = bench.count_flops(blk, x)
    assert got == b * block_flops(n, d)


def test_one_block_backward(bench):
    """Backward: every matmul twice (input and weight gradients); attention by torch's formula
    (which recomputes the scores: 5 N^2 D-sized products instead of 4)."""
    from timm.models.vision_transformer import Block

    n, d, h, b = 65, 96, 3, 2
    blk = Block(d, h, qkv_bias=True)
    x = torch.randn(b, n, d, requires_grad=True)
    fwd = bench.count_flops(blk, x)
    total = bench.count_flops(lambda: blk(x).sum().backward())
    linear = b * (block_flops(n, d) - 2 * 2 * n * n * d)
    attn_fwd = b * 2 * 2 * n * n * d
    assert fwd == linear + attn_fwd
    assert total == 3 * linear + attn_fwd + attn_fwd * 5 // 2


def test_cpu_fused_attention_is_counted(bench):
    q = torch.randn(1, 2, 10, 8)
    assert bench.count_flops(torch.nn.functional.scaled_dot_product_attention, q, q, q) == 2 * 2 * 2 * 10 * 10 * 8


def test_student_vit_forward(bench):
    """The whole student on visible tokens: patch embedding on all patches, blocks on 1+n_vis."""
    from maskalign.models.vit import MaskedViT

    img, p, d, depth, heads = 64, 16, 96, 2, 3
    vit = MaskedViT(img_size=img, patch_size=p, embed_dim=d, depth=depth, num_heads=heads).eval()
    n_patch = (img // p) ** 2
    keep = torch.arange(5).expand(2, 5)
    with torch.no_grad():
        got = bench.count_flops(vit, torch.randn(2, 3, img, img), keep)
    patch = 2 * n_patch * (3 * p * p) * d
    assert got == 2 * (patch + depth * block_flops(1 + 5, d))


@pytest.mark.parametrize("h", [3, 4])
def test_open_clip_block_forward(bench, h):
    """The teacher's block counts the same: nn.MultiheadAttention takes its fused inference op
    (``_native_multi_head_attention``) in eval/no_grad with an even head count, and the
    decomposed SDPA path with an odd one."""
    transformer = pytest.importorskip("open_clip.transformer")
    n, d = 50, 96
    blk = transformer.ResidualAttentionBlock(d, h, batch_first=True).eval()
    with torch.no_grad():
        got = bench.count_flops(blk, torch.randn(3, n, d))
    assert got == 3 * block_flops(n, d)


def test_live_tensor_bytes(bench):
    """The benchmark's CPU memory counter: peak of live storages, views counted once, frees seen."""
    with bench.LiveTensorBytes() as m:
        a = torch.empty(1000, dtype=torch.float32)      # 4000 bytes
        v = a.view(10, 100)                             # a view: no new memory
        b = torch.empty(500, dtype=torch.float64)       # 4000 bytes, peak 8000
        del a, v
        c = torch.empty(250, dtype=torch.float32)       # 1000 bytes after 4000 were freed
    assert m.peak == 8000
    assert m.live == 5000
    del b, c
