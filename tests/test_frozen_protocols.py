"""The frozen-feature protocols' arithmetic against hand computations: DINO's weighted k-NN vote,
DINOv2's grid of linear heads against heads trained one by one, V-JEPA's attentive pooling, the
features each reads, the feature cache, and the tables' protocol split."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from maskalign.transfer.attentive import AttentivePooler, CosineDecayAdamW
from maskalign.transfer.features import BlockTokens, FeatureCache, block_tokens, pooled
from maskalign.transfer.knn import knn_accuracy, knn_predictions
from maskalign.transfer.linear_grid import GridSGD, LinearGrid, grid_loss, make_grid, select

T = 0.07


# --- k-NN ----------------------------------------------------------------------------------------
def _hand_knn(train: list[tuple[float, float]], labels: list[int], query: tuple[float, float], k: int,
              num_classes: int) -> list[int]:
    """DINO's vote by hand: cosine similarities, the k most similar, exp(sim / T) summed per class,
    classes ranked by score (ties: the lower class first)."""
    def unit(v: tuple[float, float]) -> tuple[float, float]:
        n = math.hypot(*v)
        return v[0] / n, v[1] / n

    q = unit(query)
    sims = [(q[0] * unit(t)[0] + q[1] * unit(t)[1], i) for i, t in enumerate(train)]
    sims.sort(key=lambda s: -s[0])
    score = [0.0] * num_classes
    for s, i in sims[:k]:
        score[labels[i]] += math.exp(s / T)
    return sorted(range(num_classes), key=lambda c: (-score[c], c))


# Class 2 holds one image, class 3 none: k = 3, 4 and 200 all exceed a class; the query (1, 0) sees
# the class-1 and class-2 images at the same similarity (a tie inside the vote).
TRAIN = [(1.0, 0.0), (0.6, 0.8), (0.6, -0.8), (0.0, 1.0), (-1.0, 0.0), (-0.6, 0.8)]
LABELS = [0, 1, 2, 1, 0, 1]
QUERIES = [(1.0, 0.0), (0.0, 1.0), (0.0, -1.0), (-1.0, 0.05), (0.3, 0.1)]


@pytest.mark.parametrize("k", [1, 2, 3, 4, 6, 200])
def test_knn_vote_matches_a_hand_computation(k: int) -> None:
    preds = knn_predictions(torch.tensor(TRAIN), torch.tensor(LABELS), torch.tensor(QUERIES), 4, ks=[k],
                            temperature=T, top=4)[k]
    for q, row in zip(QUERIES, preds.tolist(), strict=True):
        assert row == _hand_knn(TRAIN, LABELS, q, k, 4), (q, k)


def test_knn_ties_go_to_the_lower_class_and_k_beyond_the_bank_uses_every_image() -> None:
    # (1, 0) with k = 3: class 0 at sim 1 wins; classes 1 and 2 tie at exp(0.6 / T): 1 before 2
    p = knn_predictions(torch.tensor(TRAIN), torch.tensor(LABELS), torch.tensor([(1.0, 0.0)]), 4, ks=[3], top=4)[3]
    assert p.tolist() == [[0, 1, 2, 3]]
    # two images at the same similarity, one per class: a tied vote -> the lower class index
    p = knn_predictions(torch.tensor([(0.6, 0.8), (0.6, -0.8)]), torch.tensor([3, 1]), torch.tensor([(1.0, 0.0)]),
                        4, ks=[2], top=1)[2]
    assert p.tolist() == [[1]]
    acc = knn_accuracy(torch.tensor(TRAIN), torch.tensor(LABELS), torch.tensor(QUERIES), torch.tensor([0, 1, 2, 0, 0]),
                       4, ks=[1, 200])
    hand = {k: [_hand_knn(TRAIN, LABELS, q, k, 4) for q in QUERIES] for k in (1, 200)}
    for k in (1, 200):
        want1 = sum(r[0] == y for r, y in zip(hand[k], [0, 1, 2, 0, 0], strict=True))
        assert acc[k]["top1"] == pytest.approx(100.0 * want1 / 5)
        assert acc[k]["top5"] == pytest.approx(100.0)  # 4 classes: every class is among the top 5


def test_chunked_similarity_equals_the_whole_matrix() -> None:
    g = torch.Generator().manual_seed(0)
    train, test = torch.randn(500, 16, generator=g), torch.randn(77, 16, generator=g)
    labels = torch.randint(0, 7, (500,), generator=g)
    ks = [1, 5, 20, 100, 600]
    whole = knn_predictions(train, labels, test, 7, ks, query_chunk=10_000)
    for q_chunk, b_chunk in ((1, None), (13, None), (10_000, 64), (7, 33), (10_000, 1)):
        parts = knn_predictions(train, labels, test, 7, ks, query_chunk=q_chunk, bank_chunk=b_chunk)
        for k in ks:
            assert torch.equal(parts[k], whole[k]), (q_chunk, b_chunk, k)


# --- features ------------------------------------------------------------------------------------
def _vit(**kw) -> nn.Module:
    import timm

    m = timm.create_model("vit_base_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=32, depth=3,
                          num_heads=2, num_classes=0, **kw)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return m.eval()


def test_features_are_the_cls_after_the_final_norm_or_the_pooled_feature() -> None:
    x = torch.randn(2, 3, 32, 32)
    m = _vit(reg_tokens=2)
    with torch.no_grad():
        seq = m.norm(m.blocks(m.norm_pre(m._pos_embed(m.patch_embed(x)))))  # the timm model's own modules
        assert torch.allclose(pooled(m, x), seq[:, 0], atol=1e-5)
        toks = block_tokens(m, x, 2)
        assert len(toks) == 2 and torch.allclose(toks[-1].cls, seq[:, 0], atol=1e-5)
        assert torch.allclose(toks[-1].patches, seq[:, 3:], atol=1e-5) and toks[-1].prefix.shape[1] == 3
        h = m.norm_pre(m._pos_embed(m.patch_embed(x)))
        h = m.blocks[1](m.blocks[0](h))
        assert torch.allclose(toks[0].cls, m.norm(h)[:, 0], atol=1e-5)  # an earlier block, also after the norm
        avg = _vit(class_token=False, global_pool="avg", fc_norm=True)
        seq = avg.blocks(avg._pos_embed(avg.patch_embed(x)))
        assert torch.allclose(pooled(avg, x), avg.fc_norm(seq.mean(1)), atol=1e-5)
        t = block_tokens(avg, x, 1)[-1]
        assert t.prefix.shape[1] == 0 and torch.allclose(t.cls, avg.norm(seq).mean(1), atol=1e-5)


def test_feature_cache_is_reused_only_under_its_key(tmp_path: Path) -> None:
    f, y = torch.randn(5, 3), torch.arange(5)
    calls = []

    def compute() -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(1)
        return f, y

    (a, _), hit = FeatureCache(tmp_path, "k1").get("train", torch.device("cpu"), compute)
    assert not hit and torch.equal(a, f)
    (b, _), hit = FeatureCache(tmp_path, "k1").get("train", torch.device("cpu"), compute)
    assert hit and torch.equal(b, f) and len(calls) == 1
    _, hit = FeatureCache(tmp_path, "k2").get("train", torch.device("cpu"), compute)  # another encoder: recomputed
    assert not hit and len(calls) == 2
    FeatureCache(tmp_path, "k2").path("train").write_bytes(b"truncated")
    _, hit = FeatureCache(tmp_path, "k2").get("train", torch.device("cpu"), compute)
    assert not hit and len(calls) == 3


# --- DINOv2's grid of linear heads ---------------------------------------------------------------
def _batches(n: int, dim: int = 8, classes: int = 5, batch: int = 16) -> list[tuple[list[BlockTokens], torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [([BlockTokens(torch.randn(batch, 2, dim, generator=g), torch.randn(batch, 4, dim, generator=g))
              for _ in range(3)], torch.randint(0, classes, (batch,), generator=g)) for _ in range(n)]


def test_the_grid_trains_each_head_as_if_alone() -> None:
    settings = make_grid([0.05, 0.5, 2.0], n_blocks=[1, 2], avgpool=[False, True])
    batches, seed, steps = _batches(6), 3, 6
    grid = LinearGrid(settings, 8, 5, seed)
    opt = GridSGD(grid, momentum=0.9)
    scales = [0.5 * (1 + math.cos(math.pi * s / steps)) for s in range(steps)]  # cosine to 0, no warm-up
    for (tokens, y), scale in zip(batches, scales, strict=True):
        grid_loss(grid(tokens), y).backward()
        opt.step(scale)
        opt.zero_grad()
    for i, s in enumerate(settings):  # the same head alone: nn.Linear + torch's SGD on its own input
        def feats(tokens: list[BlockTokens], s=s) -> torch.Tensor:
            x = torch.cat([t.prefix[:, 0] for t in tokens[-s.n_blocks:]], 1)
            return torch.cat([x, tokens[-1].patches.mean(1)], 1) if s.avgpool else x

        head = nn.Linear(8 * (s.n_blocks + s.avgpool), 5)
        with torch.no_grad():
            g = torch.Generator().manual_seed(seed + i)  # head i's seed: N(0, 0.01), bias 0
            head.weight.copy_(torch.randn(5, head.in_features, generator=g) * 0.01)
            head.bias.zero_()
        sgd = torch.optim.SGD(head.parameters(), lr=s.lr, momentum=0.9)
        for (tokens, y), scale in zip(batches, scales, strict=True):
            for group in sgd.param_groups:
                group["lr"] = s.lr * scale
            F.cross_entropy(head(feats(tokens)), y).backward()
            sgd.step()
            sgd.zero_grad()
        w, b = grid.head(i)
        assert torch.allclose(w, head.weight, atol=1e-6, rtol=1e-5), s.name
        assert torch.allclose(b, head.bias, atol=1e-6, rtol=1e-5), s.name


def test_selection_uses_held_out_train_and_records_dinov2s_choice() -> None:
    settings = make_grid([0.1, 1.0], n_blocks=[1], avgpool=[False])
    holdout = torch.tensor([[5.0, 9, 10], [7, 9, 10]], dtype=torch.float64)  # head 1 best on held-out
    val = torch.tensor([[80.0, 90, 100], [60, 90, 100]], dtype=torch.float64)  # head 0 best on val
    out = select(settings, holdout, val)
    assert out["winner"]["name"] == settings[1].name and out["winner"]["val_top1"] == pytest.approx(60.0)
    assert out["val_selected"]["name"] == settings[0].name and out["val_selected"]["val_top1"] == pytest.approx(80.0)


# --- attentive probe -----------------------------------------------------------------------------
def test_attentive_pooling_matches_a_hand_computation() -> None:
    torch.manual_seed(0)
    d, heads, n = 8, 2, 5
    pool = AttentivePooler(d, heads, mlp_ratio=2.0)
    with torch.no_grad():
        for p in pool.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(3, n, d)

    def ln(t: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
        mu, var = t.mean(-1, keepdim=True), t.var(-1, unbiased=False, keepdim=True)
        return (t - mu) / torch.sqrt(var + 1e-5) * norm.weight + norm.bias

    with torch.no_grad():
        want = []
        for b in range(3):
            q0 = pool.query[0, 0]
            xn = ln(x[b], pool.norm1)
            q = pool.xattn.q.weight @ q0 + pool.xattn.q.bias
            kv = xn @ pool.xattn.kv.weight.T + pool.xattn.kv.bias
            k, v = kv[:, :d], kv[:, d:]
            dh = d // heads
            out = []
            for h in range(heads):
                sl = slice(h * dh, (h + 1) * dh)
                a = torch.softmax(torch.stack([q[sl] @ k[j, sl] for j in range(n)]) / math.sqrt(dh), 0)
                out.append(sum(a[j] * v[j, sl] for j in range(n)))
            y = q0 + torch.cat(out)
            hid = pool.mlp[0].weight @ ln(y, pool.norm2) + pool.mlp[0].bias
            hid = 0.5 * hid * (1 + torch.erf(hid / math.sqrt(2)))  # exact GELU
            want.append(y + pool.mlp[2].weight @ hid + pool.mlp[2].bias)
        assert torch.allclose(pool(x), torch.stack(want), atol=1e-5)


def test_weight_decay_follows_the_lr_cosine() -> None:
    p = nn.Parameter(torch.ones(2, 2))
    opt = CosineDecayAdamW([{"params": [p], "weight_decay": 1e-3}], lr=1e-3, weight_decay=1e-3,
                           final_weight_decay=1e-6)
    for frac in (1.0, 0.5, 0.0):
        opt.param_groups[0]["lr"] = 1e-3 * frac
        p.grad = torch.zeros_like(p)
        opt.step()
        assert opt.param_groups[0]["weight_decay"] == pytest.approx(1e-6 + (1e-3 - 1e-6) * frac)


# --- tables --------------------------------------------------------------------------------------
def test_table1_lp_column_reads_maes_probe_and_the_grid_has_its_own_table() -> None:
    from maskalign.results.tables import of_protocol, record_protocol

    frame = pd.DataFrame({"config": [{}, {"protocol": "mae"}, {"protocol": "dinov2"}], "task": ["linprobe"] * 3})
    assert [record_protocol(c) for c in frame["config"]] == ["mae", "mae", "dinov2"]
    assert list(of_protocol(frame, "mae").index) == [0, 1] and list(of_protocol(frame, "dinov2").index) == [2]
    from maskalign.tasks import get_task

    (spec,) = get_task("linprobe").tables()
    assert spec.protocol == "dinov2" and "Head" in spec.settings
    assert {s.name for s in get_task("knn").tables()} == {"knn"}
    assert {s.name for s in get_task("attentive").tables()} == {"attentive"}


def test_attentive_decay_groups_follow_vjepa() -> None:
    from maskalign.transfer.attentive import param_groups

    pool = AttentivePooler(8, 2)
    decay, no_decay = param_groups(pool, 1e-3)
    names = {id(p): n for n, p in pool.named_parameters()}
    assert {names[id(p)] for p in decay["params"]} == {"query", "xattn.q.weight", "xattn.kv.weight",
                                                      "mlp.0.weight", "mlp.2.weight"}
    assert all(names[id(p)].endswith(("bias", "norm1.weight", "norm2.weight")) for p in no_decay["params"])
    assert decay["weight_decay"] == 1e-3 and no_decay["weight_decay"] == 0.0
