"""MAE: norm-pix targets and the masked-only loss, checked against values computed here by hand."""

from __future__ import annotations

import torch
from objective_fixtures import norm_pix_by_hand, patch_by_hand, tiny_vit

from maskalign.masking import visible_mask
from maskalign.objectives.mae import MAE, patchify

P = 8  # patch side of the tiny ViT (32 px -> 4 x 4 = 16 patches)


def _mae(**kw) -> MAE:
    kw = {"mask_ratio": 0.75, "decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 2, **kw}
    return MAE(tiny_vit(), **kw)


def _fixed_keep() -> torch.Tensor:
    return torch.tensor([[0, 5, 10, 15], [3, 2, 1, 0]])


def test_patchify_matches_slicing():
    torch.manual_seed(0)
    images = torch.randn(2, 3, 32, 32)
    t = patchify(images, P)
    assert t.shape == (2, 16, P * P * 3)
    for b in range(2):
        for i in range(4):
            for j in range(4):
                assert torch.equal(t[b, i * 4 + j], patch_by_hand(images, b, i, j, P))


def test_loss_is_norm_pix_mse_on_masked_patches_only():
    torch.manual_seed(1)
    obj = _mae()
    images = torch.randn(2, 3, 32, 32) * 2.0 + 0.3
    pred = torch.randn(2, 16, P * P * 3)
    keep = _fixed_keep()
    obj.choose_visible = lambda batch, device: keep
    obj.decode = lambda latent, keep_idx: pred

    expected_sum, count = 0.0, 0
    for b in range(2):
        for n in range(16):
            if n in keep[b].tolist():
                continue
            target = norm_pix_by_hand(patch_by_hand(images, b, n // 4, n % 4, P))
            expected_sum += ((pred[b, n] - target) ** 2).mean().item()
            count += 1
    assert count == 24
    loss = obj(images).loss
    assert torch.allclose(loss, torch.tensor(expected_sum / count), rtol=1e-5, atol=1e-6)

    # Changing the prediction of a visible patch changes nothing; of a masked one, it does.
    pred2 = pred.clone()
    pred2[0, 5] += 10.0
    obj.decode = lambda latent, keep_idx: pred2
    assert torch.allclose(obj(images).loss, loss, rtol=0, atol=1e-7)
    pred2[0, 6] += 10.0
    assert obj(images).loss > loss + 1.0


def test_without_norm_pix_the_target_is_the_input_as_given():
    torch.manual_seed(2)
    obj = _mae(norm_pix_loss=False)
    images = torch.randn(2, 3, 32, 32)
    keep = _fixed_keep()
    obj.choose_visible = lambda batch, device: keep
    obj.decode = lambda latent, keep_idx: torch.zeros(2, 16, P * P * 3)
    masked = [(b, n) for b in range(2) for n in range(16) if n not in keep[b].tolist()]
    expected = sum((patch_by_hand(images, b, n // 4, n % 4, P) ** 2).mean() for b, n in masked) / len(masked)
    assert torch.allclose(obj(images).loss, expected, rtol=1e-5)


def test_real_decoder_with_zero_head_gives_the_norm_pix_second_moment():
    # A zero prediction against norm-pix targets costs sum(t^2)/n = (n-1)/n * var/(var+eps) per patch.
    torch.manual_seed(3)
    obj = _mae()
    torch.nn.init.zeros_(obj.decoder_pred.weight)
    torch.nn.init.zeros_(obj.decoder_pred.bias)
    images = torch.randn(4, 3, 32, 32)
    n = P * P * 3
    assert abs(obj(images).loss.item() - (n - 1) / n) < 1e-4


def test_decoder_puts_visible_tokens_back_at_their_positions():
    # The same visible set listed in another order (latent rows permuted alike) decodes identically.
    torch.manual_seed(4)
    obj = _mae().eval()
    images = torch.randn(1, 3, 32, 32)
    keep = torch.tensor([[7, 1, 12, 4]])
    perm = torch.tensor([2, 0, 3, 1])
    latent = obj.encoder(images, keep)
    latent_perm = torch.cat([latent[:, :1], latent[:, 1:][:, perm]], dim=1)
    with torch.no_grad():
        a = obj.decode(latent, keep)
        b = obj.decode(latent_perm, keep[:, perm])
    assert a.shape == (1, 16, P * P * 3)
    assert torch.allclose(a, b, atol=1e-5)


def test_random_masking_and_ratios():
    obj = _mae()
    keep = obj.choose_visible(3, torch.device("cpu"))
    assert keep.shape == (3, 4)
    assert all(len(set(row.tolist())) == 4 for row in keep)
    assert visible_mask(keep, 16).sum().item() == 12
    assert obj.forward_ratio == 0.25 and obj.reconstruct_ratio == 0.75
    assert obj.supervision == "RGB" and obj.method_id == "mae" and obj.num_views == 1


def test_backward_reaches_every_trainable_parameter_and_export_is_encoder_only():
    torch.manual_seed(5)
    obj = _mae()
    obj(torch.randn(2, 3, 32, 32)).loss.backward()
    unused = [n for n, p in obj.named_parameters() if p.requires_grad and p.grad is None]
    assert unused == []
    assert not obj.decoder_pos_embed.requires_grad
    keys = set(obj.encoder_state_dict())
    assert keys == set(obj.encoder.state_dict())
    assert not any(k.startswith(("decoder", "mask_token")) for k in keys)
    assert "norm.weight" in keys and "cls_token" in keys
    assert obj.no_weight_decay() == set()  # as MAE: cls and mask tokens (3-D) are decayed
