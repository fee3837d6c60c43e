"""LUT: the broader-context term by hand, disjoint visible sets, EMA schedule, update and resume."""

from __future__ import annotations

import math

import pytest
import torch
from objective_fixtures import layer_norm_by_hand, tiny_vit
from PIL import Image

from maskalign.checkpoint import load_file, save_training_checkpoint
from maskalign.engine.optim import param_groups
from maskalign.objectives.lut import LUT, bc_loss, ema_momentum


def _lut(seed: int = 0, **kw) -> LUT:
    kw = {"mask_ratio": 0.75, "decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 2, "mlp_dim": 16, **kw}
    torch.manual_seed(seed)
    return LUT(tiny_vit(seed), **kw)


def _cos_by_hand(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(-1) / (a.pow(2).sum(-1).sqrt() * b.pow(2).sum(-1).sqrt())


def test_bc_loss_is_two_minus_two_cosine():
    a = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [3.0, -4.0, 0.0]])
    b = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-3.0, 4.0, 0.0]])
    # cos = 1, 1/sqrt(2), -1 -> 2 - 2cos = 0, 2 - sqrt(2), 4
    expected = (0.0 + (2 - math.sqrt(2)) + 4.0) / 3
    assert bc_loss(a, b).item() == pytest.approx(expected, abs=1e-6)


def test_total_loss_is_mae_plus_weighted_cross_view_bc_by_hand():
    obj = _lut(1, mae_weight=0.0, bc_weight=1.0, mlp_norm="none")
    obj.train()
    v1, v2 = torch.randn(3, 3, 32, 32), torch.randn(3, 3, 32, 32)
    keep1 = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]])
    keep2 = torch.tensor([[4, 5, 6, 7], [0, 1, 2, 3], [12, 13, 14, 15]])
    obj.choose_visible_pair = lambda batch, device: (keep1, keep2)
    with torch.no_grad():
        # Make the EMA differ from the student so a wrong branch would show.
        for p in obj.ema.parameters():
            p.add_(0.01 * torch.randn_like(p))
        enc, ema = obj.encoder, obj.ema.encoder

        def student(v, keep):
            z = enc(v, keep)[:, 1:].mean(1)
            return obj.predictor(obj.projector(z))

        def teacher(v):
            x = v
            tokens = ema.embed(x)
            for blk in ema.blocks:
                tokens = blk(tokens)
            z = ema.norm(tokens)[:, 1:].mean(1)  # whole view, final norm, patch-token mean
            return obj.ema.projector(z)

        q1, q2 = student(v1, keep1), student(v2, keep2)
        t1, t2 = teacher(v1), teacher(v2)
        expected = 0.5 * ((2 - 2 * _cos_by_hand(q1, t2)).mean() + (2 - 2 * _cos_by_hand(q2, t1)).mean())
        out = obj([v1, v2])
    assert torch.allclose(out.loss, expected, atol=1e-5)
    assert torch.allclose(out.metrics["bc_loss"], expected, atol=1e-5)

    # With both weights on, the total is mae + 0.25 * bc, the MAE part on view 1 only.
    obj.mae_weight, obj.bc_weight = 1.0, 0.25
    with torch.no_grad():
        out = obj([v1, v2])
        mae_v1 = obj.masked_pixel_loss(v1, obj.decode(obj.encoder(v1, keep1), keep1), keep1)
    assert torch.allclose(out.metrics["mae_loss"], mae_v1, atol=1e-6)
    assert torch.allclose(out.loss, mae_v1 + 0.25 * out.metrics["bc_loss"], atol=1e-6)


def test_layer_norm_by_hand_matches_encoder_final_norm():
    # Sanity check of the helper's meaning (the encoder's final norm is LN eps 1e-6 with affine 1/0).
    enc = tiny_vit()
    x = torch.randn(2, 5, 32)
    assert torch.allclose(enc.norm(x), layer_norm_by_hand(x, eps=1e-6), atol=1e-5)


def test_visible_sets_are_disjoint_quarters_of_one_permutation():
    obj = _lut()
    k1, k2 = obj.choose_visible_pair(5, torch.device("cpu"))
    assert k1.shape == k2.shape == (5, 4)
    for a, b in zip(k1.tolist(), k2.tolist()):
        assert len(set(a)) == 4 and len(set(b)) == 4 and not set(a) & set(b)
    assert obj.forward_ratio == 0.25 and obj.reconstruct_ratio == 0.75
    assert obj.num_views == 2 and obj.supervision == "RGB" and obj.method_id == "lut"
    with pytest.raises(ValueError):
        _lut(mask_ratio=0.4)


def test_momentum_schedule_is_cosine_from_base_to_one():
    assert ema_momentum(0.996, 0.0) == pytest.approx(0.996)
    assert ema_momentum(0.996, 0.5) == pytest.approx(0.998)
    assert ema_momentum(0.996, 1.0) == pytest.approx(1.0)
    assert ema_momentum(0.996, 0.25) == pytest.approx(1 - 0.004 * (1 + math.cos(math.pi / 4)) / 2)


def test_ema_update_by_hand_and_ema_is_out_of_optimizer_and_export():
    obj = _lut(2)
    old = {k: v.clone() for k, v in obj.ema.state_dict().items()}
    with torch.no_grad():
        for p in obj.encoder.parameters():
            p.add_(torch.randn_like(p))
        for p in obj.projector.parameters():
            p.add_(torch.randn_like(p))
    obj.projector[1].running_mean.fill_(3.0)
    obj.after_optimizer_step(0.5)
    m = 0.998
    student = {**{f"encoder.{k}": v for k, v in obj.encoder.state_dict().items()},
               **{f"projector.{k}": v for k, v in obj.projector.state_dict().items()}}
    for k, v in obj.ema.state_dict().items():
        if v.is_floating_point():
            assert torch.allclose(v, m * old[k] + (1 - m) * student[k], atol=1e-6), k
        else:
            assert torch.equal(v, student[k]), k
    assert obj.momentum == pytest.approx(m)

    assert all(not p.requires_grad for p in obj.ema.parameters())
    in_opt = {id(p) for g in param_groups(obj, 0.05, obj.no_weight_decay()) for p in g["params"]}
    assert not any(id(p) in in_opt for p in obj.ema.parameters())
    assert set(obj.encoder_state_dict()) == set(obj.encoder.state_dict())
    assert any(k.startswith("ema.encoder.") for k in obj.state_dict_to_save())
    obj.train()
    assert not obj.ema.training and obj.projector.training


def test_ema_is_restored_from_a_checkpoint(tmp_path):
    obj = _lut(3)
    x = [torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)]
    opt = torch.optim.AdamW(param_groups(obj, 0.05, obj.no_weight_decay()), lr=1e-2)
    for step in range(2):
        obj(x).loss.backward()
        opt.step()
        opt.zero_grad()
        obj.after_optimizer_step(0.1 * (step + 1))
    ema_state = {k: v.clone() for k, v in obj.ema.state_dict().items()}
    path = save_training_checkpoint(tmp_path, {"model": obj.state_dict_to_save()})

    fresh = _lut(4)  # other random init: a broken restore would leave this EMA in place
    assert not torch.allclose(fresh.ema.encoder.cls_token, ema_state["encoder.cls_token"])
    missing, unexpected = fresh.load_state_dict(load_file(path)["model"], strict=False)  # as the engine
    assert missing == [] and unexpected == []
    for k, v in fresh.ema.state_dict().items():
        assert torch.equal(v, ema_state[k]), k
    # And the EMA is not a copy of the student: it kept its own values.
    assert not torch.equal(fresh.ema.encoder.cls_token, fresh.encoder.cls_token)


def test_two_views_share_one_crop():
    obj = _lut()
    from omegaconf import OmegaConf

    tf = obj.train_transform(OmegaConf.create({"student": {"img_size": 32}}))
    img = Image.fromarray((torch.rand(40, 48, 3) * 255).to(torch.uint8).numpy())
    v1, v2 = tf(img)
    assert v1.shape == v2.shape == (3, 32, 32)
    tf.view2 = tf.view1  # without view 2's colour changes the two views are the same pixels
    for _ in range(5):
        a, b = tf(img)
        assert torch.equal(a, b)


def test_forward_backward_reaches_every_trainable_parameter():
    obj = _lut(5)
    obj([torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)]).loss.backward()
    assert [n for n, p in obj.named_parameters() if p.requires_grad and p.grad is None] == []
    with pytest.raises(ValueError):
        obj(torch.randn(2, 3, 32, 32))
