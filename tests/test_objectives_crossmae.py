"""CrossMAE: cross-attention only, partial reconstruction, feature fusion and the predicted-only loss."""

from __future__ import annotations

import math

import pytest
import torch
from objective_fixtures import norm_pix_by_hand, patch_by_hand, tiny_vit

from maskalign.engine.optim import param_groups
from maskalign.models.vit import MaskedViT
from maskalign.objectives.crossmae import CrossMAE, WeightedFeatureMaps

P = 8


def _crossmae(encoder=None, **kw) -> CrossMAE:
    kw = {"mask_ratio": 0.75, "kept_mask_ratio": 0.25, "decoder_dim": 32, "decoder_depth": 3,
          "decoder_heads": 2, **kw}
    return CrossMAE(encoder or tiny_vit(), **kw)


def test_decoder_has_no_self_attention_between_queries():
    torch.manual_seed(0)
    obj = _crossmae().eval()
    images = torch.randn(2, 3, 32, 32)
    keep, pred_idx = obj.choose_tokens(2, torch.device("cpu"))
    with torch.no_grad():
        fused = obj.wfm(obj.encoder_features(images, keep))
        q = obj.queries(pred_idx)
        out = obj.decode(q, fused)
        q2 = q.clone()
        q2[:, 0] += torch.randn_like(q2[:, 0]) * 5.0
        out2 = obj.decode(q2, fused)
        # Decoding one query alone gives what it gets among the others.
        alone = obj.decode(q[:, 2:3], fused)
    assert out.shape == (2, 4, 32)
    assert torch.allclose(out2[:, 1:], out[:, 1:], atol=1e-6)
    assert not torch.allclose(out2[:, 0], out[:, 0], atol=1e-3)
    assert torch.allclose(alone[:, 0], out[:, 2], atol=1e-5)


def test_only_the_sampled_fraction_is_decoded():
    torch.manual_seed(1)
    obj = _crossmae()
    assert (obj.num_keep, obj.num_dropped, obj.num_pred) == (4, 8, 4)
    pred, target, keep, pred_idx = obj.reconstruct(torch.randn(3, 3, 32, 32))
    assert pred.shape == (3, 4, P * P * 3) and target.shape == pred.shape
    for k, p in zip(keep.tolist(), pred_idx.tolist()):
        assert len(set(k)) == 4 and len(set(p)) == 4 and not set(k) & set(p)
        assert p == sorted(p)
    # Full prediction (kmr = mr) decodes every masked patch.
    full = _crossmae(kept_mask_ratio=0.75)
    assert full.num_pred == 12 and full.reconstruct(torch.randn(1, 3, 32, 32))[0].shape[1] == 12


def test_vit_b_counts_and_ratios():
    enc = MaskedViT(img_size=224, patch_size=16, embed_dim=32, depth=1, num_heads=2)
    obj = CrossMAE(enc, mask_ratio=0.75, kept_mask_ratio=0.25, decoder_dim=32, decoder_depth=1, decoder_heads=2)
    assert (obj.num_keep, obj.num_dropped, obj.num_pred) == (49, 98, 49)
    assert obj.forward_ratio == 0.25 and obj.reconstruct_ratio == 0.25
    assert obj.lr_multiplier == pytest.approx(1 / 3)
    assert obj.supervision == "RGB" and obj.method_id == "crossmae"
    inv = CrossMAE(enc, kept_mask_ratio=0.25, decoder_dim=32, decoder_depth=1, decoder_heads=2, lr_scale="inverse")
    assert inv.lr_multiplier == pytest.approx(3.0)


def test_loss_is_norm_pix_mse_over_predicted_patches_only():
    torch.manual_seed(2)
    obj = _crossmae()
    keep = torch.tensor([[0, 1, 2, 3], [15, 14, 13, 12]])
    pred_idx = torch.tensor([[4, 9, 10, 11], [0, 1, 2, 8]])
    obj.choose_tokens = lambda batch, device: (keep, pred_idx)
    torch.nn.init.zeros_(obj.decoder_pred.weight)
    bias = torch.randn(P * P * 3)
    with torch.no_grad():
        obj.decoder_pred.bias.copy_(bias)  # every prediction equals ``bias``
    images = torch.randn(2, 3, 32, 32) * 1.5
    terms = [((bias - norm_pix_by_hand(patch_by_hand(images, b, n // 4, n % 4, P))) ** 2).mean()
             for b in range(2) for n in pred_idx[b].tolist()]
    expected = sum(terms) / len(terms)
    assert torch.allclose(obj(images).loss, expected, rtol=1e-5)


def test_weighted_feature_maps_mix_and_intended_init():
    k, depth = 400, 300
    wfm = WeightedFeatureMaps(k, depth)
    w = wfm.linear.weight
    assert w.shape == (depth, k) and wfm.linear.bias is None
    # normal(0, 1/sqrt(k)), not xavier-uniform (whose std would be sqrt(2/(k+depth)) = 0.053).
    assert abs(w.std().item() - 1 / math.sqrt(k)) < 0.05 / math.sqrt(k)
    assert abs(w.mean().item()) < 0.002
    small = WeightedFeatureMaps(3, 2)
    feats = [torch.randn(2, 5, 4) for _ in range(3)]
    out = small(feats)
    assert out.shape == (2, 5, 4, 2)
    W = small.linear.weight.detach()
    for j in range(2):
        by_hand = sum(W[j, i] * feats[i] for i in range(3))
        assert torch.allclose(out[..., j], by_hand, atol=1e-6)


def test_fusion_inputs_and_per_block_norms():
    obj = _crossmae(encoder=tiny_vit(depth=3), decoder_depth=2)
    assert obj.wfm.linear.weight.shape == (2, 4)  # k = depth 3 + input
    assert len(obj.dec_norms) == 2 and obj.dec_norms[0].elementwise_affine
    no_input = _crossmae(encoder=tiny_vit(depth=3), decoder_depth=2, use_input=False)
    assert no_input.wfm.linear.weight.shape == (2, 3)
    feats = obj.encoder_features(torch.randn(1, 3, 32, 32), torch.tensor([[1, 2, 3, 4]]))
    assert len(feats) == 4 and all(f.shape == (1, 5, 32) for f in feats)


def test_every_trainable_parameter_gets_a_gradient_and_final_norm_is_frozen():
    torch.manual_seed(3)
    obj = _crossmae()
    obj(torch.randn(2, 3, 32, 32)).loss.backward()
    trainable = [n for n, p in obj.named_parameters() if p.requires_grad]
    assert [n for n, p in obj.named_parameters() if p.requires_grad and p.grad is None] == []
    assert "encoder.norm.weight" not in trainable and "wfm.linear.weight" in trainable
    in_opt = {id(p) for g in param_groups(obj, 0.05, obj.no_weight_decay()) for p in g["params"]}
    assert id(obj.encoder.norm.weight) not in in_opt
    assert set(obj.encoder_state_dict()) == set(obj.encoder.state_dict())


def test_kept_ratio_above_mask_ratio_is_refused():
    with pytest.raises(ValueError):
        _crossmae(kept_mask_ratio=0.8)
