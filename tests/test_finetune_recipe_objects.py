"""The objects the fine-tuning job builds for a paper recipe: Mixup/CutMix, the loss, drop path, eval resize.

The job is run on the paper's config up to its training loop (``fit`` is replaced by a catcher), and
what it built is compared with objects made here from the paper's numbers (MaskAlign section 4.1 /
MAE's ``main_finetune.py``: mixup 0.8, cutmix 1.0, prob 1.0, switch prob 0.5, mode batch, label
smoothing 0.1, drop path 0.2) through timm's own classes, and timm's stochastic-depth rule
(``torch.linspace(0, rate, depth)``). The eval resize is MAE's ``int(input_size / crop_pct)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from transfer_helpers import mini_imagenet, run_task

from maskalign.checkpoint import export_encoder
from maskalign.config import config_dir, load_config
from maskalign.data.transforms import eval_transform
from maskalign.transfer.classifier import build_classifier

ARCH = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 4, "num_heads": 2, "mlp_ratio": 2.0}
PAPER = {"mixup_alpha": 0.8, "cutmix_alpha": 1.0, "mix_prob": 1.0, "switch_prob": 0.5, "mode": "batch",
         "label_smoothing": 0.1}


class _Caught(Exception):
    pass


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, tiny_demo_imagenet: Path) -> dict:
    """What ``finetune.run`` hands its loop for ``maskalign_vitb16`` (resolution and batch made small)."""
    from maskalign.transfer import finetune

    tmp = tmp_path_factory.mktemp("recipe")
    torch.manual_seed(0)
    model = build_classifier(ARCH, 0, kind="finetune", global_pool="token")
    enc = export_encoder(tmp / "enc", {k: v for k, v in model.state_dict().items() if not k.startswith("head")},
                         {"arch": ARCH, "method": "mae", "run": "tiny", "pt_epochs": 1})
    mini = mini_imagenet(tiny_demo_imagenet, tmp / "imagenet", train=2, val=1)
    cfg = load_config("maskalign_vitb16", [f"output_dir={tmp / 'out'}", f"data.root={mini}", "name=recipe",
                                           "data.num_workers=0", "model.img_size=32", "optim.total_batch_size=8",
                                           "runtime.device=cpu"], config_dir("finetune"))
    cfg = OmegaConf.create(OmegaConf.to_container(cfg))
    seen: dict = {"cfg": cfg}

    def catch(model, optimizer, criterion, *args, batch_fn=None, **kwargs):
        seen.update(model=model, optimizer=optimizer, criterion=criterion, mixup=batch_fn)
        raise _Caught

    mp = pytest.MonkeyPatch()
    mp.setattr(finetune, "fit", catch)
    try:
        with pytest.raises(_Caught):
            run_task("finetune", cfg, enc)
    finally:
        mp.undo()
    return seen


def test_mixup_cutmix_arguments_are_the_papers(built: dict) -> None:
    from timm.data import Mixup

    mix = built["mixup"]
    assert isinstance(mix, Mixup)
    for name, value in PAPER.items():
        assert getattr(mix, name) == value, name
    assert mix.num_classes == 10 and mix.cutmix_minmax is None and mix.correct_lam and mix.mixup_enabled


def test_mixup_mixes_as_timms_mixup_of_the_paper_numbers(built: dict) -> None:
    """Same draws, same batch and targets as a Mixup built here from the paper's numbers."""
    from timm.data import Mixup

    ref = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5, mode="batch",
                label_smoothing=0.1, num_classes=10)
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(4, 3, 32, 32, generator=g), torch.tensor([0, 3, 7, 9])
    for seed in range(6):  # both branches (mixup and cutmix) are drawn over these seeds
        np.random.seed(seed)
        got = built["mixup"](x.clone(), y.clone())
        np.random.seed(seed)
        want = ref(x.clone(), y.clone())
        torch.testing.assert_close(got[0], want[0])
        torch.testing.assert_close(got[1], want[1])
    # label smoothing 0.1 over 10 classes: off 0.01, on 0.91 before mixing
    np.random.seed(0)
    _, t = built["mixup"](x.clone(), torch.tensor([1, 1, 1, 1]))
    assert t.sum(dim=1).allclose(torch.ones(4)) and t.min() >= 0.01 - 1e-6


def test_the_loss_takes_soft_targets(built: dict) -> None:
    from timm.loss import SoftTargetCrossEntropy

    assert isinstance(built["criterion"], SoftTargetCrossEntropy)


def test_drop_path_in_the_classifiers_blocks(built: dict) -> None:
    """Stochastic depth rises linearly from 0 to the recipe's 0.2 over the blocks (timm, MAE, BEiT)."""
    rates = [float(r) for r in torch.linspace(0, 0.2, ARCH["depth"])]
    blocks = built["model"].blocks
    assert len(blocks) == ARCH["depth"]
    for i, blk in enumerate(blocks):
        for dp in (blk.drop_path1, blk.drop_path2):
            got = float(getattr(dp, "drop_prob", 0.0))  # block 0: timm's Identity
            assert got == pytest.approx(rates[i], abs=1e-7), (i, got)
    assert built["cfg"].model.drop_path == 0.2


@pytest.mark.parametrize("size,crop,resized", [(224, 0.875, 256), (384, 0.875, 438), (448, 0.875, 512),
                                                (224, 0.9, 248), (64, 1.0, 64)])
def test_eval_resize_truncates_like_mae(size: int, crop: float, resized: int) -> None:
    """MAE ``util/datasets.py``: ``size = int(args.input_size / crop_pct)`` -- 438 at 384 px, not 439."""
    t = eval_transform(size, crop)
    assert t.transforms[0].size == resized
    assert t.transforms[1].size == (size, size)


def test_optimizer_is_adamw_with_the_papers_lr_and_layer_decay(built: dict) -> None:
    """AdamW, lr = blr * batch / 256 (3e-4 * 8 / 256), per-tensor scale 0.6^(depth + 1 - layer), wd 0.05 on 2-D."""
    opt, model = built["optimizer"], built["model"]
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.defaults["lr"] == pytest.approx(3e-4 * 8 / 256) and tuple(opt.defaults["betas"]) == (0.9, 0.999)
    depth = ARCH["depth"]
    group_of = {id(p): g for g in opt.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        g = group_of[id(p)]
        if name.startswith(("cls_token", "pos_embed", "patch_embed")):
            layer = 0
        elif name.startswith("blocks."):
            layer = int(name.split(".")[1]) + 1
        else:
            layer = depth + 1
        assert g["lr_scale"] == pytest.approx(0.6 ** (depth + 1 - layer)), name
        no_wd = p.ndim == 1 or name in ("cls_token", "pos_embed")
        assert g["weight_decay"] == (0.0 if no_wd else 0.05), name
    # global pooling: a fresh fc_norm and a head at trunc_normal(std=2e-5)
    assert isinstance(model.fc_norm, torch.nn.LayerNorm) and model.head.weight.abs().max() < 1e-4


def test_linear_probe_builds_mae_lars_and_a_frozen_encoder(tmp_path: Path, tiny_demo_imagenet: Path) -> None:
    """``maskalign_vitb16`` probe: LARS (momentum 0.9, wd 0, trust 1e-3) at 0.025 * batch / 256,
    only BatchNorm(affine=False) + Linear trainable, plain cross-entropy."""
    from maskalign.transfer import linprobe
    from maskalign.transfer.lars import LARS

    torch.manual_seed(0)
    model = build_classifier(ARCH, 0, kind="finetune", global_pool="token")
    enc = export_encoder(tmp_path / "enc", {k: v for k, v in model.state_dict().items() if not k.startswith("head")},
                         {"arch": ARCH, "method": "mae", "run": "tiny", "pt_epochs": 1})
    mini = mini_imagenet(tiny_demo_imagenet, tmp_path / "imagenet", train=2, val=1)
    cfg = load_config("maskalign_vitb16", [f"output_dir={tmp_path / 'out'}", f"data.root={mini}", "name=probe",
                                           "data.num_workers=0", "model.img_size=32", "optim.total_batch_size=8",
                                           "runtime.device=cpu"], config_dir("linprobe"))
    seen: dict = {}

    def catch(model, optimizer, criterion, *args, **kwargs):
        seen.update(model=model, optimizer=optimizer, criterion=criterion)
        raise _Caught

    mp = pytest.MonkeyPatch()
    mp.setattr(linprobe, "fit", catch)
    try:
        with pytest.raises(_Caught):
            run_task("linprobe", OmegaConf.create(OmegaConf.to_container(cfg)), enc)
    finally:
        mp.undo()
    opt = seen["optimizer"]
    assert isinstance(opt, LARS)
    assert opt.defaults["lr"] == pytest.approx(0.025 * 8 / 256)
    assert (opt.defaults["momentum"], opt.defaults["weight_decay"], opt.defaults["trust_coefficient"]) == \
        (0.9, 0.0, 0.001)
    trainable = {n for n, p in seen["model"].named_parameters() if p.requires_grad}
    assert trainable == {"head.1.weight", "head.1.bias"}
    assert {id(p) for g in opt.param_groups for p in g["params"]} == \
        {id(p) for n, p in seen["model"].named_parameters() if n in trainable}
    bn = seen["model"].head[0]
    assert isinstance(bn, torch.nn.BatchNorm1d) and not bn.affine and bn.eps == 1e-6
    assert type(seen["criterion"]) is torch.nn.CrossEntropyLoss and seen["criterion"].label_smoothing == 0.0
    assert seen["model"].head[1].weight.detach().std().item() == pytest.approx(0.01, rel=0.3)  # trunc_normal_
