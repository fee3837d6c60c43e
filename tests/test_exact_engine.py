"""The engine itself, run for a few steps: the optimizer groups and learning rates it builds, and
LUT's EMA updates against the official schedule, through a real stop and resume.

Expected values come from the official recipes written out here: timm's ``add_weight_decay`` rule
(1-D tensors, biases and ``skip_list`` in the no-decay group; frozen tensors left out), MAE's
warm-up + half-cycle cosine per iteration, each method's lr rule, and DINO's ``cosine_scheduler``
that ``naver-ai/lut`` indexes by ``epoch * len(loader) + data_iter_step``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from maskalign.checkpoint import load_encoder_state, load_file
from maskalign.config import config_dir, load_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = config_dir("pretrain")
BATCH, PER_CLASS, CLASSES = 4, 8, 2  # 16 images -> 4 iterations per epoch


@pytest.fixture(scope="module")
def tiny_imagenet(tmp_path_factory: pytest.TempPathFactory, tiny_demo_imagenet: Path) -> Path:
    """16 demo images in two classes (symlinks): 4 iterations of batch 4 per epoch."""
    root = tmp_path_factory.mktemp("tiny_imagenet")
    for cls in sorted(p for p in (tiny_demo_imagenet / "train").iterdir() if p.is_dir())[:CLASSES]:
        (root / "train" / cls.name).mkdir(parents=True)
        for img in sorted(cls.iterdir())[:PER_CLASS]:
            (root / "train" / cls.name / img.name).symlink_to(img)
    return root


def _cfg(config: str | None, out: Path, root: Path, *extra: str) -> Any:
    return load_config(CONFIGS / config if config else None, [
        f"output_dir={out}", "name=t", "data.dataset=imagenet", f"data.root={root}", "data.num_workers=0",
        f"optim.total_batch_size={BATCH}", "optim.epochs=2", *extra], CONFIGS)


def _capture(monkeypatch: pytest.MonkeyPatch) -> dict:
    """The objective and optimizer the engine builds (wrapped, not replaced)."""
    import maskalign.engine.pretrain as engine

    seen: dict = {}
    build_objective, build_adamw = engine.build_objective, engine.build_adamw

    def objective(cfg: Any) -> Any:
        seen["objective"] = build_objective(cfg)
        return seen["objective"]

    def adamw(*a: Any, **k: Any) -> torch.optim.Optimizer:
        seen["optimizer"] = build_adamw(*a, **k)
        return seen["optimizer"]

    monkeypatch.setattr(engine, "build_objective", objective)
    monkeypatch.setattr(engine, "build_adamw", adamw)
    return seen


def _official_lr(blr: float, batch: int, rule: str, mult: float, epoch: float, warmup: float, epochs: float,
                 min_lr: float) -> float:
    lr = (blr * batch / 256 if rule == "linear" else blr * math.sqrt(batch) / 4) * mult
    if epoch < warmup:
        return lr * epoch / warmup
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup) / (epochs - warmup)))


CASES = {
    # config, extra overrides, names that must be in the no-decay group, in the decay group, absent,
    # lr multiplier (CrossMAE: kmr / mr)
    "maskalign": (None, ["teacher.backend=demo"],
                  {"da.weight", "encoder.blocks.0.norm1.weight", "encoder.blocks.0.attn.qkv.bias",
                   "encoder.norm.bias", "da.adaptors.0.bias"},
                  {"encoder.cls_token", "encoder.blocks.0.attn.qkv.weight", "encoder.patch_embed.proj.weight",
                   "da.adaptors.0.weight"},
                  {"encoder.pos_embed"}, 1.0),
    "mae": ("demo_mae.yaml", [],
            {"encoder.blocks.0.norm2.weight", "decoder_embed.bias", "decoder_norm.weight",
             "decoder_blocks.0.norm1.bias"},
            {"mask_token", "encoder.cls_token", "decoder_embed.weight", "decoder_pred.weight"},
            {"encoder.pos_embed", "decoder_pos_embed"}, 1.0),
    "crossmae": ("demo_crossmae.yaml", [],
                 {"dec_norms.0.weight", "decoder_blocks.0.attn.kv.bias"},
                 {"wfm.linear.weight", "mask_token", "decoder_blocks.0.attn.q.weight"},
                 {"encoder.pos_embed", "decoder_pos_embed", "encoder.norm.weight"}, None),
    "lut": ("demo_lut.yaml", ["student.img_size=32"],
            {"projector.1.weight", "projector.1.bias", "encoder.blocks.1.norm1.weight"},
            {"projector.0.weight", "predictor.0.weight", "mask_token"},
            {"encoder.pos_embed", "ema.encoder.cls_token", "ema.projector.0.weight"}, 1.0),
}


@pytest.mark.parametrize("method", sorted(CASES))
def test_optimizer_groups_and_lr_the_engine_builds(method: str, tmp_path: Path, tiny_imagenet: Path,
                                                   tiny_demo_world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from maskalign.engine.pretrain import train

    config, extra, no_decay, decay, absent, mult = CASES[method]
    seen = _capture(monkeypatch)
    cfg = _cfg(config, tmp_path, tiny_imagenet, "runtime.max_steps=3", "optim.warmup_epochs=0.25",
               "optim.weight_decay=0.05", *extra)
    train(cfg)
    obj, opt = seen["objective"], seen["optimizer"]
    names = {id(p): n for n, p in obj.named_parameters()}
    groups = {g["weight_decay"]: {names[id(p)] for p in g["params"]} for g in opt.param_groups}
    assert set(groups) == {0.0, 0.05}
    # timm's add_weight_decay with MaskAlign's skip_list=["distill_weights"]: the rule, by hand.
    skip = {"da.weight"} if method == "maskalign" else set()
    trainable = {n for n, p in obj.named_parameters() if p.requires_grad}
    want_no_decay = {n for n in trainable if dict(obj.named_parameters())[n].ndim <= 1 or n.endswith(".bias")
                     or n in skip}
    assert groups[0.0] == want_no_decay
    assert groups[0.05] == trainable - want_no_decay
    assert no_decay <= groups[0.0] and decay <= groups[0.05]
    assert not absent & (groups[0.0] | groups[0.05])  # frozen: sin-cos tables, EMA, unused final norm
    if mult is None:
        mult = cfg.crossmae.kept_mask_ratio / cfg.mask.ratio
    # Steps at iterations 0, 1, 2 of epoch 0; the last lr was set at epoch 2/4 = 0.5.
    want = _official_lr(cfg.optim.blr, BATCH, cfg.optim.lr_rule, mult, 0.5, 0.25, 2.0, cfg.optim.min_lr)
    for g in opt.param_groups:
        assert g["lr"] == pytest.approx(want, rel=1e-9)


def _dino_cosine(base: float, final: float, epochs: int, iters: int) -> np.ndarray:
    """DINO's ``cosine_scheduler`` as naver-ai/lut calls it (no warm-up)."""
    i = np.arange(epochs * iters)
    return final + 0.5 * (base - final) * (1 + np.cos(np.pi * i / len(i)))


def _record_ema(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Every EMA update: its momentum, and the EMA and student state before and after it."""
    from maskalign.objectives.lut import LUT

    calls: list[dict] = []
    original = LUT.update_ema

    def update(self, momentum: float) -> None:
        def snap(m):
            return {k: v.detach().clone() for k, v in m.state_dict().items()}
        rec = {"m": momentum, "ema": snap(self.ema.encoder), "student": snap(self.encoder),
               "ema_proj": snap(self.ema.projector), "proj": snap(self.projector)}
        original(self, momentum)
        rec["ema_after"], rec["ema_proj_after"] = snap(self.ema.encoder), snap(self.ema.projector)
        calls.append(rec)

    monkeypatch.setattr(LUT, "update_ema", update)
    return calls


LUT_EXTRA = ("student.img_size=32", "optim.warmup_epochs=1", "lut.ema_momentum=0.9", "lut.mlp_dim=64")


@pytest.mark.parametrize("accum", [1, 2])
def test_lut_ema_follows_the_official_schedule_per_data_iteration(accum: int, tmp_path: Path, tiny_imagenet: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from maskalign.engine.pretrain import train

    calls = _record_ema(monkeypatch)
    train(_cfg("demo_lut.yaml", tmp_path, tiny_imagenet, f"optim.accum_iter={accum}", *LUT_EXTRA))
    iters = PER_CLASS * CLASSES // (BATCH // accum)
    sched = _dino_cosine(0.9, 1.0, 2, iters)
    # naver-ai/lut: update at optimizer steps only, with it = epoch * len(loader) + data_iter_step.
    want = [sched[e * iters + i] for e in range(2) for i in range(iters) if (i + 1) % accum == 0]
    assert [c["m"] for c in calls] == pytest.approx(want, abs=1e-12)
    for c in calls:
        m = c["m"]
        for before, student, after in ((c["ema"], c["student"], c["ema_after"]),
                                       (c["ema_proj"], c["proj"], c["ema_proj_after"])):
            for k, e in before.items():
                if e.is_floating_point():
                    torch.testing.assert_close(after[k], m * e + (1 - m) * student[k], rtol=1e-6, atol=1e-7)
                else:
                    assert torch.equal(after[k], student[k]), k


def test_lut_ema_is_restored_by_a_real_resume(tmp_path: Path, tiny_imagenet: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from maskalign.engine.pretrain import train

    calls = _record_ema(monkeypatch)
    train(_cfg("demo_lut.yaml", tmp_path / "a", tiny_imagenet, *LUT_EXTRA))
    straight = [c["m"] for c in calls]
    calls.clear()
    stops = iter([True])
    train(_cfg("demo_lut.yaml", tmp_path / "b", tiny_imagenet, *LUT_EXTRA), stop_flag=lambda: next(stops, True))
    assert load_file(tmp_path / "b" / "pretrain" / "t" / "checkpoint.pth")["epoch"] == 1
    calls.clear()
    train(_cfg("demo_lut.yaml", tmp_path / "b", tiny_imagenet, *LUT_EXTRA))  # resumes at epoch 1
    assert [c["m"] for c in calls] == straight[len(straight) // 2:]  # the schedule index continues
    a = load_file(tmp_path / "a" / "pretrain" / "t" / "checkpoint.pth")["model"]
    b = load_file(tmp_path / "b" / "pretrain" / "t" / "checkpoint.pth")["model"]
    ema_keys = [k for k in a if k.startswith("ema.")]
    assert ema_keys and any(k.startswith("ema.projector.") for k in ema_keys)
    for k in ema_keys:
        assert torch.equal(a[k], b[k]), k
    # The EMA is not a copy of the student: a resume that restarted it would not match.
    assert not torch.equal(a["ema.encoder.blocks.0.attn.qkv.weight"], a["encoder.blocks.0.attn.qkv.weight"])
    # The run's exports carry the 3-head arch of the demo ViT (width 96) beside both files.
    for name in ("encoder.pth", "pretrain_model.pth"):
        _, meta = load_encoder_state(tmp_path / "b" / "pretrain" / "t" / name)
        assert (meta["arch"]["embed_dim"], meta["arch"]["num_heads"]) == (96, 3), name
