"""MAE's and CrossMAE's decoders (and LUT's total) against reference forwards written here from
the official code's structure, on the same weights and the same masks.

Every weight is moved off its initial value first (LayerNorms, biases, mask token, fusion
matrix), so a swapped norm, a dropped bias or a missing position embedding changes the numbers.
The references use only torch primitives and the tensors of ``state_dict()``; they mirror
``facebookresearch/mae`` ``models_mae.py`` (shuffle, ``ids_restore`` gather, decoder position
embedding) and ``TonyLianLong/CrossMAE`` ``models_cross.py`` (per-block fused maps, queries =
mask token + position embedding at the predicted positions).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from objective_fixtures import norm_pix_by_hand, patch_by_hand

from maskalign.models.vit import MaskedViT
from maskalign.objectives.crossmae import CrossMAE
from maskalign.objectives.lut import LUT
from maskalign.objectives.mae import MAE

IMG, P, DIM, DEPTH, HEADS = 32, 8, 32, 2, 2
N = (IMG // P) ** 2


def _encoder(seed: int = 0) -> MaskedViT:
    torch.manual_seed(seed)
    return MaskedViT(img_size=IMG, patch_size=P, embed_dim=DIM, depth=DEPTH, num_heads=HEADS)


def _perturb(model: torch.nn.Module, seed: int = 1) -> None:
    """Every trainable tensor moved off its init (norm weights around 1, everything else around 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not p.requires_grad or "pos_embed" in name:
                continue
            noise = torch.randn(p.shape, generator=g) * 0.2
            if "norm" in name and name.endswith("weight") or (".bn" in name):
                p.copy_(1.0 + noise)
            else:
                p.add_(noise)


def _ln(x: torch.Tensor, s: dict, prefix: str, eps: float = 1e-6) -> torch.Tensor:
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * s[f"{prefix}.weight"] + s[f"{prefix}.bias"]


def _lin(x: torch.Tensor, s: dict, prefix: str) -> torch.Tensor:
    out = x @ s[f"{prefix}.weight"].T
    return out + s[f"{prefix}.bias"] if f"{prefix}.bias" in s else out


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    b, nq, d = q.shape
    def split(t):
        return t.reshape(b, t.shape[1], heads, d // heads).transpose(1, 2)
    q, k, v = split(q), split(k), split(v)
    w = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // heads), dim=-1)
    return (w @ v).transpose(1, 2).reshape(b, nq, d)


def _mlp(x: torch.Tensor, s: dict, prefix: str) -> torch.Tensor:
    return _lin(F.gelu(_lin(x, s, f"{prefix}.fc1")), s, f"{prefix}.fc2")


def _self_block(x: torch.Tensor, s: dict, prefix: str, heads: int) -> torch.Tensor:
    """timm 0.3.2's Block, which MAE uses for encoder and decoder alike."""
    h = _ln(x, s, f"{prefix}.norm1")
    q, k, v = _lin(h, s, f"{prefix}.attn.qkv").chunk(3, dim=-1)
    x = x + _lin(_attend(q, k, v, heads), s, f"{prefix}.attn.proj")
    return x + _mlp(_ln(x, s, f"{prefix}.norm2"), s, f"{prefix}.mlp")


def _embed(images: torch.Tensor, s: dict, keep: torch.Tensor) -> torch.Tensor:
    """Patch embedding + sin-cos position, visible patches gathered, [CLS] (+ its zero position) first."""
    x = F.conv2d(images, s["encoder.patch_embed.proj.weight"], s["encoder.patch_embed.proj.bias"], stride=P)
    x = x.flatten(2).transpose(1, 2) + s["encoder.pos_embed"][:, 1:]
    x = torch.stack([x[b, keep[b]] for b in range(x.shape[0])])
    cls = (s["encoder.cls_token"] + s["encoder.pos_embed"][:, :1]).expand(x.shape[0], -1, -1)
    return torch.cat([cls, x], dim=1)


def _encoder_blocks(images: torch.Tensor, s: dict, keep: torch.Tensor) -> list[torch.Tensor]:
    x = _embed(images, s, keep)
    outs = [x]
    for i in range(DEPTH):
        x = _self_block(x, s, f"encoder.blocks.{i}", HEADS)
        outs.append(x)
    return outs  # input tokens, then every block (pre-norm)


def _targets(images: torch.Tensor) -> torch.Tensor:
    g = IMG // P
    return torch.stack([torch.stack([norm_pix_by_hand(patch_by_hand(images, b, n // g, n % g, P))
                                     for n in range(N)]) for b in range(images.shape[0])])


KEEP = torch.tensor([[5, 0, 12, 9], [3, 15, 7, 1]])  # deliberately unsorted visible sets


def reference_mae_pred(images: torch.Tensor, s: dict, keep: torch.Tensor, heads: int, depth: int) -> torch.Tensor:
    """models_mae.py: forward_encoder -> forward_decoder, with ids_shuffle = [keep, rest]."""
    b = images.shape[0]
    latent = _ln(_encoder_blocks(images, s, keep)[-1], s, "encoder.norm")
    rest = torch.stack([torch.tensor([i for i in range(N) if i not in set(k.tolist())]) for k in keep])
    ids_restore = torch.argsort(torch.cat([keep, rest], dim=1), dim=1)
    x = _lin(latent, s, "decoder_embed")
    mask_tokens = s["mask_token"].repeat(b, N + 1 - x.shape[1], 1)
    x_ = torch.cat([x[:, 1:], mask_tokens], dim=1)
    x_ = torch.gather(x_, 1, ids_restore.unsqueeze(-1).repeat(1, 1, x.shape[2]))
    x = torch.cat([x[:, :1], x_], dim=1) + s["decoder_pos_embed"]
    for i in range(depth):
        x = _self_block(x, s, f"decoder_blocks.{i}", heads)
    return _lin(_ln(x, s, "decoder_norm"), s, "decoder_pred")[:, 1:]


def test_mae_decoder_and_loss_equal_the_reference() -> None:
    torch.manual_seed(3)
    obj = MAE(_encoder(), mask_ratio=0.75, decoder_dim=16, decoder_depth=2, decoder_heads=2)
    _perturb(obj)
    obj.choose_visible = lambda batch, device: KEEP
    images = torch.randn(2, 3, IMG, IMG)
    s = obj.state_dict()
    with torch.no_grad():
        pred = reference_mae_pred(images, s, KEEP, 2, 2)
        loss = obj(images).loss
    masked = torch.ones(2, N, dtype=torch.bool)
    for b in range(2):
        masked[b, KEEP[b]] = False
    per_patch = ((pred - _targets(images)) ** 2).mean(-1)
    want = per_patch[masked].mean()
    torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-6)
    # The visible patches' predictions matter to nothing: only the masked ones enter the loss.
    assert not torch.allclose(per_patch[~masked].mean(), want, rtol=1e-2)


def reference_crossmae_pred(images: torch.Tensor, s: dict, keep: torch.Tensor, pred_idx: torch.Tensor,
                            heads: int, depth: int, use_input: bool) -> torch.Tensor:
    """models_cross.py with --weight_fm --use_input: per-block fused, normed maps as keys/values."""
    feats = _encoder_blocks(images, s, keep)
    feats = feats if use_input else feats[1:]
    w = s["wfm.linear.weight"]  # (decoder_depth, k)
    x = s["mask_token"] + s["decoder_pos_embed"][0, 1:][pred_idx]
    for j in range(depth):
        fused = sum(w[j, i] * f for i, f in enumerate(feats))
        y = _ln(fused, s, f"dec_norms.{j}")
        pre = f"decoder_blocks.{j}"
        q = _lin(_ln(x, s, f"{pre}.norm1"), s, f"{pre}.attn.q")
        k, v = _lin(y, s, f"{pre}.attn.kv").chunk(2, dim=-1)
        x = x + _lin(_attend(q, k, v, heads), s, f"{pre}.attn.proj")
        x = x + _mlp(_ln(x, s, f"{pre}.norm2"), s, f"{pre}.mlp")
    return _lin(_ln(x, s, "decoder_norm"), s, "decoder_pred")


def test_crossmae_decoder_and_loss_equal_the_reference() -> None:
    torch.manual_seed(4)
    obj = CrossMAE(_encoder(), mask_ratio=0.75, kept_mask_ratio=0.5, decoder_dim=16, decoder_depth=3,
                   decoder_heads=2, use_input=True)
    _perturb(obj)
    pred_idx = torch.tensor([[2, 4, 6, 8, 10, 11, 13, 14], [0, 2, 4, 5, 6, 8, 9, 10]])  # raster order
    obj.choose_tokens = lambda batch, device: (KEEP, pred_idx)
    images = torch.randn(2, 3, IMG, IMG)
    s = obj.state_dict()
    with torch.no_grad():
        want_pred = reference_crossmae_pred(images, s, KEEP, pred_idx, 2, 3, True)
        pred, target, _, _ = obj.reconstruct(images)
        loss = obj(images).loss
    torch.testing.assert_close(pred, want_pred, rtol=1e-5, atol=1e-5)
    t = _targets(images)
    want_target = torch.stack([t[b, pred_idx[b]] for b in range(2)])
    torch.testing.assert_close(target, want_target, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss, ((want_pred - want_target) ** 2).mean(), rtol=1e-5, atol=1e-6)


def test_lut_total_equals_the_reference() -> None:
    """MAE loss on view 1 + 0.25 * mean of the two cross-view 2 - 2 cos terms against the EMA branch
    (whole view, final norm, patch-token mean, projector in eval mode: BN with running statistics)."""
    torch.manual_seed(5)
    obj = LUT(_encoder(), mask_ratio=0.75, decoder_dim=16, decoder_depth=2, decoder_heads=2, mlp_dim=24,
              bc_weight=0.25, ema_momentum=0.9)
    _perturb(obj)
    with torch.no_grad():  # an EMA that differs from the student, with non-trivial BN statistics
        for name, t in obj.ema.state_dict().items():
            if t.is_floating_point():
                t.add_(0.1 * torch.randn(t.shape)) if "running_var" not in name else t.uniform_(0.5, 2.0)
    keep2 = torch.tensor([[1, 2, 3, 4], [0, 5, 6, 8]])
    obj.choose_visible_pair = lambda batch, device: (KEEP, keep2)
    obj.train()
    v1, v2 = torch.randn(2, 3, IMG, IMG), torch.randn(2, 3, IMG, IMG)
    s, e = obj.state_dict(), obj.ema.state_dict()
    with torch.no_grad():
        total = obj([v1, v2]).loss

        def mlp_train(z: torch.Tensor, prefix: str) -> torch.Tensor:  # BN with batch statistics
            h = z @ s[f"{prefix}.0.weight"].T
            h = (h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=False) + 1e-5) * s[f"{prefix}.1.weight"] \
                + s[f"{prefix}.1.bias"]
            return F.relu(h) @ s[f"{prefix}.3.weight"].T

        def student(view: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
            z = _ln(_encoder_blocks(view, s, keep)[-1], s, "encoder.norm")
            return mlp_train(mlp_train(z[:, 1:].mean(1), "projector"), "predictor")

        def teacher(view: torch.Tensor) -> torch.Tensor:
            es = {f"encoder.{k[len('encoder.'):]}": v for k, v in e.items() if k.startswith("encoder.")}
            z = _ln(_encoder_blocks(view, es, torch.arange(N).expand(view.shape[0], -1))[-1], es, "encoder.norm")
            h = z[:, 1:].mean(1) @ e["projector.0.weight"].T
            h = (h - e["projector.1.running_mean"]) / torch.sqrt(e["projector.1.running_var"] + 1e-5) \
                * e["projector.1.weight"] + e["projector.1.bias"]
            return F.relu(h) @ e["projector.3.weight"].T

        def bc(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return (2 - 2 * (F.normalize(a, dim=-1) * F.normalize(b, dim=-1)).sum(-1)).mean()

        pred = reference_mae_pred(v1, s, KEEP, 2, 2)
    masked = torch.ones(2, N, dtype=torch.bool)
    for b in range(2):
        masked[b, KEEP[b]] = False
    mae = ((pred - _targets(v1)) ** 2).mean(-1)[masked].mean()
    want = mae + 0.25 * 0.5 * (bc(student(v1, KEEP), teacher(v2)) + bc(student(v2, keep2), teacher(v1)))
    torch.testing.assert_close(total, want, rtol=1e-5, atol=1e-6)
