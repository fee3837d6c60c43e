"""The fast attention path gives the plain path's numbers.

* The student ViT with timm's fused attention (``F.scaled_dot_product_attention``) equals the same
  weights with the explicit softmax(QK^T)V, forward and gradients.
* The teachers' hand-computed [CLS] attention (``cls_attention``, used because fused kernels return
  no weights) equals the softmax attention computed the plain way inside a timm ``Block`` and an
  open_clip ``ResidualAttentionBlock``.
* Timm's fused attention is on by default here, so training actually takes the fast path.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from maskalign.models.vit import MaskedViT
from maskalign.teachers.base import cls_attention


def _set_fused(model: torch.nn.Module, on: bool) -> int:
    n = 0
    for m in model.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = on
            n += 1
    return n


def test_timm_fused_attention_is_on():
    import timm.layers

    assert timm.layers.use_fused_attn(), "timm's fused attention is off (TIMM_FUSED_ATTN=0?)"
    vit = MaskedViT(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3)
    assert all(blk.attn.fused_attn for blk in vit.blocks)


@pytest.mark.parametrize("with_keep", [False, True])
def test_student_fused_equals_plain(with_keep):
    torch.manual_seed(0)
    vit = MaskedViT(img_size=64, patch_size=8, embed_dim=96, depth=3, num_heads=3).eval()
    x = torch.randn(3, 3, 64, 64)
    keep = torch.rand(3, vit.num_patches).argsort(1)[:, :19] if with_keep else None

    outs, grads = [], []
    for fused in (True, False):
        assert _set_fused(vit, fused) == 3
        vit.zero_grad(set_to_none=True)
        y = vit.forward_blocks(x, keep)
        sum((o ** 2).mean() for o in y).backward()
        outs.append([o.detach() for o in y])
        grads.append({n: p.grad.clone() for n, p in vit.named_parameters() if p.grad is not None})
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert grads[0].keys() == grads[1].keys()
    for k in grads[0]:
        torch.testing.assert_close(grads[0][k], grads[1][k], rtol=1e-4, atol=1e-6, msg=k)


def _plain_attention_probs(x: torch.Tensor, wq, bq, wk, bk, num_heads: int) -> torch.Tensor:
    """softmax(QK^T / sqrt(d)) for all queries, (B, H, N, N), the textbook way."""
    b, n, d = x.shape
    hd = d // num_heads
    q = (x @ wq.T + bq).reshape(b, n, num_heads, hd).transpose(1, 2)
    k = (x @ wk.T + bk).reshape(b, n, num_heads, hd).transpose(1, 2)
    return torch.softmax(q @ k.transpose(-2, -1) / hd ** 0.5, dim=-1)


def test_cls_attention_matches_timm_block():
    from timm.models.vision_transformer import Block

    torch.manual_seed(1)
    d, h = 64, 4
    blk = Block(d, h, qkv_bias=True).eval()
    with torch.no_grad():
        blk.attn.qkv.bias.normal_()
    x = torch.randn(2, 17, d)
    xn = blk.norm1(x)
    w, bias = blk.attn.qkv.weight, blk.attn.qkv.bias

    # The block's own attention weights: timm's non-fused path, captured from its softmax.
    blk.attn.fused_attn = False
    captured = {}
    orig_softmax = torch.Tensor.softmax

    def spy(t, *a, **k):
        out = orig_softmax(t, *a, **k)
        captured["p"] = out
        return out

    torch.Tensor.softmax = spy
    try:
        with torch.no_grad():
            blk.attn(xn)
    finally:
        torch.Tensor.softmax = orig_softmax
    probs = captured["p"]  # (B, H, N, N)
    expected = probs.mean(dim=1)[:, 0, 1:]

    got = cls_attention(xn, w[:d], bias[:d], w[d:2 * d], bias[d:2 * d], h)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    plain = _plain_attention_probs(xn, w[:d], bias[:d], w[d:2 * d], bias[d:2 * d], h).mean(1)[:, 0, 1:]
    torch.testing.assert_close(got, plain, rtol=1e-5, atol=1e-6)
    # And the block's fused output is the one these weights give.
    blk.attn.fused_attn = True
    v = (xn @ w[2 * d:].T + bias[2 * d:]).reshape(2, 17, h, d // h).transpose(1, 2)
    ctx = (probs @ v).transpose(1, 2).reshape(2, 17, d)
    with torch.no_grad():
        torch.testing.assert_close(blk.attn(xn), blk.attn.proj(ctx), rtol=1e-4, atol=1e-5)


def test_cls_attention_matches_open_clip_block():
    open_clip_transformer = pytest.importorskip("open_clip.transformer")

    torch.manual_seed(2)
    d, h = 64, 4
    blk = open_clip_transformer.ResidualAttentionBlock(d, h, batch_first=True).eval()
    with torch.no_grad():
        blk.attn.in_proj_bias.normal_()
    x = torch.randn(2, 17, d)
    xn = blk.ln_1(x)
    mha = blk.attn
    w, bias = mha.in_proj_weight, mha.in_proj_bias
    # nn.MultiheadAttention's own (plain) weights, averaged over heads.
    with torch.no_grad():
        _, weights = mha(xn, xn, xn, need_weights=True, average_attn_weights=True)
    expected = weights[:, 0, 1:]
    got = cls_attention(xn, w[:d], bias[:d], w[d:2 * d], bias[d:2 * d], h)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    # The block's fast path (need_weights=False, fused) is the same attention.
    with torch.no_grad():
        fast = blk.attention(xn)
        plain_out, _ = mha(xn, xn, xn, need_weights=True)
    torch.testing.assert_close(fast, plain_out, rtol=1e-4, atol=1e-5)


def test_teacher_cls_attention_end_to_end():
    """A whole timm teacher: its [CLS] attention equals the last block's plain attention."""
    import timm

    from maskalign.teachers.timm_teacher import TimmTeacher

    torch.manual_seed(3)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=64)
    teacher = TimmTeacher(model, "t")
    x = torch.randn(2, 3, 64, 64)
    out = teacher(x, [teacher.depth - 1])
    # Recompute by hand: run the blocks, take the last block's normed input.
    with torch.no_grad():
        m = model
        z = m.norm_pre(m.patch_drop(m._pos_embed(m.patch_embed(teacher.prepare(x)))))
        for blk in m.blocks[:-1]:
            z = blk(z)
        last = m.blocks[-1]
        zn = last.norm1(z)
        d = zn.shape[-1]
        w, b = last.attn.qkv.weight, last.attn.qkv.bias
        probs = _plain_attention_probs(zn, w[:d], b[:d], w[d:2 * d], b[d:2 * d], last.attn.num_heads)
    torch.testing.assert_close(out.cls_attn, probs.mean(1)[:, 0, 1:], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.cls_attn.sum(1) + probs.mean(1)[:, 0, 0], torch.ones(2), rtol=1e-5, atol=1e-5)


def test_sdpa_matches_softmax_in_bf16_autocast():
    """The fused kernel under bf16 autocast stays close to the fp32 plain attention."""
    torch.manual_seed(4)
    q, k, v = (torch.randn(2, 3, 33, 16) for _ in range(3))
    ref = torch.softmax(q @ k.transpose(-2, -1) / 4.0, -1) @ v
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast = F.scaled_dot_product_attention(q.bfloat16(), k.bfloat16(), v.bfloat16())
    torch.testing.assert_close(fast.float(), ref, rtol=3e-2, atol=3e-2)


def test_attentive_masking_is_multinomial_without_host_sync():
    """``attentive_masking`` samples exactly as ``torch.multinomial(w, n, replacement=False)``
    (same indices for the same RNG state) but without multinomial's validity checks, which read
    values back to the host: on CUDA those were a device sync inside every step."""
    from maskalign.masking import attentive_masking, num_visible

    torch.manual_seed(0)
    attn = torch.rand(6, 196).softmax(dim=1)
    n = num_visible(196, 0.7)
    for seed in range(5):
        g1, g2 = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        ours = attentive_masking(attn, 0.7, generator=g1)
        ref = torch.multinomial(attn.float().clamp_min(0) + 1e-12, n, replacement=False, generator=g2)
        assert torch.equal(ours, ref)
        assert ours.shape == (6, n) and all(len(set(r.tolist())) == n for r in ours)
    # The global RNG path too.
    torch.manual_seed(7)
    ours = attentive_masking(attn, 0.5)
    torch.manual_seed(7)
    assert torch.equal(ours, torch.multinomial(attn + 1e-12, num_visible(196, 0.5), replacement=False))
