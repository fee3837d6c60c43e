"""MaskAlign's maths on fixed tensors: Dynamic Alignment (eq. 1), LN targets (eq. 2), the loss
(eq. 3, official weighting), attentive and random masking, and the reduction to feature
distillation at mask ratio 0."""

from __future__ import annotations

import pytest
import torch
from objective_fixtures import FakeTeacher, layer_norm_by_hand, smooth_l1_by_hand, tiny_vit

from maskalign.alignment import DynamicAlignment, alignment_loss, normalize_target
from maskalign.masking import attentive_masking, num_visible, random_masking
from maskalign.objectives.maskalign import MaskAlign

S, T, K, DS, DT = 4, 4, 2, 6, 5  # student depth, teacher depth, top-K, widths


def _fixed_da(position: str) -> tuple[DynamicAlignment, torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    da = DynamicAlignment(DS, S, DT, T, K, "dynamic", "linear", position)
    W = torch.tensor([[0.5, -1.0, 2.0, 0.25], [1.5, 0.0, -0.5, 1.0]])
    with torch.no_grad():
        da.weight.copy_(W)
        for a in da.adaptors:
            a.weight.copy_(torch.randn(DT, DS, generator=g))
            a.bias.copy_(torch.randn(DT, generator=g))
    xs = [torch.randn(2, 3, DS, generator=g) for _ in range(S)]
    return da, W, xs, [(a.weight.detach(), a.bias.detach()) for a in da.adaptors]


def _affine(x: torch.Tensor, wb) -> torch.Tensor:
    w, b = wb
    return torch.einsum("bnd,od->bno", x, w) + b


def test_da_after_mix_is_adaptor_of_weighted_sum():
    # Official code: y_j = A_j( sum_i W[j, i] x_i ), one adaptor per aligned teacher level.
    da, W, xs, ab = _fixed_da("after_mix")
    ys = da(xs)
    assert len(ys) == K and da.levels == [2, 3]
    for j in range(K):
        mixed = torch.zeros_like(xs[0])
        for i in range(S):
            mixed = mixed + W[j, i] * xs[i]
        assert torch.allclose(ys[j], _affine(mixed, ab[j]), atol=1e-5)


def test_da_before_mix_is_weighted_sum_of_adapted_blocks():
    # Paper eq. (1): y_j = sum_i W[j, i] A_i(x_i), one adaptor per student block.
    da, W, xs, ab = _fixed_da("before_mix")
    ys = da(xs)
    assert len(da.adaptors) == S
    for j in range(K):
        expected = sum(W[j, i] * _affine(xs[i], ab[i]) for i in range(S))
        assert torch.allclose(ys[j], expected, atol=1e-5)


def test_da_initialisation_and_layerwise_matching():
    same = DynamicAlignment(DS, 12, DT, 12, 5)
    expected = torch.eye(12)[7:] + 0.01  # rows of I + 0.01 for teacher levels 8..12 (1-based)
    assert torch.allclose(same.weight.detach(), expected)
    deeper = DynamicAlignment(DS, 24, DT, 12, 5)
    assert torch.allclose(deeper.weight.detach(), torch.full((5, 24), 1 / 24))
    lw = DynamicAlignment(DS, 12, DT, 12, 5, align_type="layerwise")
    assert lw.weight is None and lw.student_index == [7, 8, 9, 10, 11]
    lw_deep = DynamicAlignment(DS, 24, DT, 12, 1, align_type="layerwise")
    assert lw_deep.student_index == [23]


def test_ln_targets_are_zero_mean_unit_variance_per_token():
    g = torch.Generator().manual_seed(1)
    y = torch.randn(2, 7, 64, generator=g) * 3.0 + 5.0
    t = normalize_target(y, "ln")
    assert torch.allclose(t.mean(-1), torch.zeros(2, 7), atol=1e-5)
    assert torch.allclose(t.var(-1, unbiased=False), torch.ones(2, 7), atol=1e-4)
    assert torch.allclose(t, layer_norm_by_hand(y), atol=1e-5)
    assert torch.equal(normalize_target(y, "none"), y)


def test_loss_is_eq3_with_official_weighting():
    g = torch.Generator().manual_seed(2)
    preds = [torch.randn(2, 5, 8, generator=g) * 2 for _ in range(3)]
    targets = [torch.randn(2, 5, 8, generator=g) for _ in range(3)]
    # Each element: 0.5 d^2 if |d| < 1 else |d| - 0.5 (beta 1); mean; x 2; weight 1/K.
    expected = sum(2 * smooth_l1_by_hand(p, t) for p, t in zip(preds, targets)) / 3
    assert torch.allclose(alignment_loss(preds, targets), expected, atol=1e-6)
    # Small errors count as plain squared error under the factor 2.
    d = torch.full((1, 1, 4), 0.3)
    assert alignment_loss([d], [torch.zeros_like(d)]).item() == pytest.approx(0.09)


def test_attentive_masking_keeps_exact_count_of_distinct_tokens():
    g = torch.Generator().manual_seed(3)
    attn = torch.rand(6, 16, generator=g).softmax(-1)
    for ratio in (0.0, 0.3, 0.7, 0.9):
        keep = attentive_masking(attn, ratio, generator=g)
        n = num_visible(16, ratio)
        assert keep.shape == (6, n)
        assert all(len(set(r.tolist())) == n for r in keep)
        assert keep.min() >= 0 and keep.max() < 16
    top = attentive_masking(attn, 0.75, deterministic=True)
    assert torch.equal(top.sort(1).values, attn.topk(4, dim=1).indices.sort(1).values)


def test_attentive_masking_prefers_attended_tokens_in_proportion():
    torch.manual_seed(4)
    g = torch.Generator().manual_seed(4)
    n, draws = 16, 20000
    w = torch.arange(1, n + 1, dtype=torch.float)
    w = w / w.sum()
    # One kept token per draw: inclusion frequency must equal the attention itself.
    keep1 = attentive_masking(w.expand(draws, n), 1 - 1 / n, generator=g)
    freq1 = torch.bincount(keep1.reshape(-1), minlength=n).float() / draws
    assert (freq1 - w).abs().max() < 0.01
    # Eight kept tokens: inclusion probability rises with attention (rank correlation ~ 1), and
    # the most attended patch is kept far more often than the least attended one.
    keep8 = attentive_masking(w.expand(draws, n), 0.5, generator=g)
    freq8 = torch.bincount(keep8.reshape(-1), minlength=n).float() / draws
    assert freq8.sum().item() == pytest.approx(8.0)
    rank_f = freq8.argsort().argsort().float()
    rank_w = torch.arange(n, dtype=torch.float)
    spearman = 1 - 6 * ((rank_f - rank_w) ** 2).sum() / (n * (n * n - 1))
    assert spearman > 0.97
    assert freq8[-1] > 3 * freq8[0]
    # Uniform random masking keeps each patch about half the time instead.
    keepr = random_masking(draws, n, 0.5)
    freqr = torch.bincount(keepr.reshape(-1), minlength=n).float() / draws
    assert (freqr - 0.5).abs().max() < 0.02


def test_random_masking_keeps_exact_count_of_distinct_tokens():
    for ratio, n_keep in ((0.0, 64), (0.7, 19), (0.75, 16), (0.9, 6)):
        keep = random_masking(5, 64, ratio)
        assert keep.shape == (5, n_keep)
        assert all(len(set(r.tolist())) == n_keep for r in keep)
    assert num_visible(196, 0.75) == 49


def _maskalign(align_type: str, top_k: int, ratio: float, cls: bool = True) -> MaskAlign:
    enc = tiny_vit(seed=5, depth=3)
    teacher = FakeTeacher(dim=24, depth=3)
    return MaskAlign(enc, teacher, mask_type="attentive", mask_ratio=ratio, align_type=align_type, top_k=top_k,
                     align_cls=cls).eval()


def test_loss_gathers_targets_at_visible_positions():
    obj = _maskalign("dynamic", 2, 0.5)
    keep = torch.tensor([[0, 3, 5, 6, 9, 10, 12, 15], [1, 2, 4, 7, 8, 11, 13, 14]])
    obj.choose_visible = lambda cls_attn, batch, device: keep
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        loss = obj(images).loss
        hs = obj.encoder.forward_blocks(images, keep)
        W = obj.da.weight
        t = obj.teacher(images, [1, 2], with_attn=False).hidden
        expected = 0
        for j, lvl in enumerate((1, 2)):
            mixed = sum(W[j, i] * hs[i] for i in range(3))
            pred = obj.da.adaptors[j](mixed)
            y = layer_norm_by_hand(t[lvl])
            y = torch.stack([torch.cat([y[b, :1], y[b, 1:][keep[b]]]) for b in range(2)])  # [CLS] + visible
            expected = expected + 2 * smooth_l1_by_hand(pred, y) / 2
    assert torch.allclose(loss, expected, atol=1e-5)
    # Without [CLS] alignment the [CLS] token is dropped from both sides.
    obj.align_cls = False
    with torch.no_grad():
        no_cls = obj(images).loss
    assert not torch.allclose(no_cls, loss)


def test_mask_ratio_0_with_identity_w_is_layerwise_feature_distillation():
    dyn = _maskalign("dynamic", 3, 0.0)
    with torch.no_grad():
        dyn.da.weight.copy_(torch.eye(3))  # teacher level j <- student block j, nothing mixed
    lw = _maskalign("layerwise", 3, 0.0)
    lw.da.adaptors.load_state_dict(dyn.da.adaptors.state_dict())
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        a, b = dyn(images).loss, lw(images).loss
        # By hand: every token of the whole image, each student block against its teacher level.
        hs = dyn.encoder.forward_blocks(images)
        t = dyn.teacher(images, [0, 1, 2], with_attn=False).hidden
        expected = sum(2 * smooth_l1_by_hand(dyn.da.adaptors[j](hs[j]), layer_norm_by_hand(t[j]))
                       for j in range(3)) / 3
    assert lw.method_id == "fd" and dyn.method_id == "maskalign" and dyn.forward_ratio == 1.0
    assert torch.allclose(a, expected, atol=1e-5)
    assert torch.allclose(b, expected, atol=1e-5)
