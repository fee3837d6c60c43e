"""Objectives built from configs: FD = MaskAlign at ratio 0, ratios from config, refusals, every
config and sweep file."""

from __future__ import annotations

import pytest
import torch
from objective_fixtures import (
    CONFIG_DIR,
    REFERENCE_DIR,
    SWEEP_DIR,
    export_random_teacher,
    layer_norm_by_hand,
    smooth_l1_by_hand,
)
from omegaconf import OmegaConf

from maskalign.config import ConfigError, load_config
from maskalign.objectives import build_objective


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory):
    return export_random_teacher(tmp_path_factory.mktemp("teacher"), depth=6)


def _local(ckpt) -> list[str]:
    return ["teacher.backend=local", f"teacher.checkpoint={ckpt}"]


def _build(name: str, overrides: list[str] | None = None):
    return build_objective(load_config(name, overrides or [], CONFIG_DIR))


def test_fd_equals_maskalign_at_ratio_0_layerwise_top1(teacher_ckpt):
    torch.manual_seed(0)
    fd = _build("demo_fd", _local(teacher_ckpt))
    assert fd.method_id == "fd" and fd.forward_ratio == 1.0 and fd.reconstruct_ratio == 0.0
    ma = _build("default", _local(teacher_ckpt) + ["mask.ratio=0", "align.type=layerwise", "align.top_k=1",
                                                   "mask.type=attentive"])
    assert ma.method_id == "fd"
    ma.load_state_dict(fd.state_dict())
    fd.eval(), ma.eval()  # no drop path: both deterministic
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a, b = fd(images).loss, ma(images).loss
        # By hand: the student's last block on the whole image (all tokens, [CLS] too) through the
        # adaptor, against the LN-normalised last teacher block, 2 x smooth-L1 (beta 1), mean.
        h = fd.encoder.forward_blocks(images)[-1]
        pred = fd.da.adaptors[0](h)
        y = layer_norm_by_hand(fd.teacher(images, [fd.teacher.depth - 1], with_attn=False).hidden[fd.teacher.depth - 1])
        expected = 2 * smooth_l1_by_hand(pred, y)
    assert torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(a, expected, atol=1e-5)


def test_fd_paper_config_is_maskalign_at_ratio_0(teacher_ckpt):
    cfg = load_config("fd_clipb16_vitb16_300ep", [], CONFIG_DIR)
    assert (cfg.method, cfg.mask.ratio, cfg.align.type, cfg.align.top_k) == ("maskalign", 0.0, "layerwise", 1)
    assert cfg.teacher.name == "ViT-B-16" and cfg.optim.epochs == 300
    small = ["student.arch=vit_tiny_demo", "student.img_size=64", "student.patch_size=8"] + _local(teacher_ckpt)
    assert _build("fd_clipb16_vitb16_300ep", small).method_id == "fd"


@pytest.mark.parametrize("name,overrides,fwd,rec", [
    ("default", None, 19 / 64, 0.0),             # int(64 * 0.3) = 19 visible: 0.296875
    ("demo_mae", [], 0.25, 0.75),
    ("demo_crossmae", [], 0.25, 0.25),
    ("demo_crossmae", ["crossmae.kept_mask_ratio=0.75"], 0.25, 0.75),
    ("demo_lut", [], 0.25, 0.75),
    ("demo_fd", None, 1.0, 0.0),
])
def test_forward_and_reconstruct_ratios_from_config(teacher_ckpt, name, overrides, fwd, rec):
    obj = _build(name, _local(teacher_ckpt) if overrides is None else overrides)
    assert obj.forward_ratio == pytest.approx(fwd) and obj.reconstruct_ratio == pytest.approx(rec)


def test_maskalign_ratio_matches_official_count_at_224():
    from maskalign.masking import num_visible

    assert num_visible(196, 0.7) == 58
    assert num_visible(64, 0.7) / 64 == 0.296875


@pytest.mark.parametrize("name,overrides,needle", [
    ("demo_mae", ["mask.type=attentive"], "attentive"),
    ("default", ["teacher.backend=none"], "needs a teacher"),
    ("default", ["align.top_k=7"], "teacher's depth"),
    ("demo_mae", ["teacher.backend=demo"], "uses no teacher"),
    ("demo_mae", ["mask.deterministic=true"], "attentive masking only"),
    ("demo_mae", ["mask.ratio=0"], "mask.ratio"),
    ("demo_crossmae", ["crossmae.kept_mask_ratio=0.8"], "kept_mask_ratio"),
    ("demo_crossmae", ["crossmae.kept_mask_ratio=0"], "kept_mask_ratio"),
    ("demo_crossmae", ["crossmae.lr_scale=sqrt"], "lr_scale"),
    ("demo_crossmae", ["crossmae.decoder_heads=3"], "decoder_heads"),
    ("demo_lut", ["mask.ratio=0.4"], "0.5"),
    ("demo_lut", ["lut.mlp_norm=gn"], "mlp_norm"),
    ("demo_lut", ["lut.ema_momentum=1.5"], "ema_momentum"),
    ("demo_mae", ["method=simmim"], "unknown"),
])
def test_wrong_combinations_are_refused_in_one_line(name, overrides, needle):
    with pytest.raises(ConfigError) as e:
        _build(name, overrides)
    msg = str(e.value)
    assert needle in msg and "\n" not in msg


def test_unknown_section_key_is_refused_at_load():
    with pytest.raises(ConfigError, match="unknown config key"):
        load_config("demo_mae", ["mae.decoder_width=3"], CONFIG_DIR)


def _paper_rows() -> dict[str, set[str]]:
    from maskalign.results.reference import load_reference

    ref = load_reference(REFERENCE_DIR)
    return {t: set(ref.keys(t)) for t in ref.tables}


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_config_loads_and_tags_a_real_paper_row(path):
    cfg = load_config(path.stem, [], CONFIG_DIR)
    assert cfg.method in ("maskalign", "mae", "crossmae", "lut")
    if cfg.paper_ref is not None:
        rows = _paper_rows()
        assert str(cfg.paper_ref.row) in rows[str(cfg.paper_ref.table)]


def test_demo_configs_build_without_downloads(teacher_ckpt):
    for name in ("demo_mae", "demo_crossmae", "demo_lut"):
        cfg = load_config(name, [], CONFIG_DIR)
        assert cfg.student.arch == "vit_tiny_demo" and cfg.data.dataset == "demo"
        assert build_objective(cfg).name == cfg.method


@pytest.mark.parametrize("path", sorted(SWEEP_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_sweeps_parse_and_every_override_exists(path):
    sweep = OmegaConf.load(path)
    assert set(sweep) == {"base", "runs"} and len(sweep.runs) > 0
    rows = _paper_rows()
    names = set()
    for run in sweep.runs:
        assert set(run) == {"name", "overrides"}
        assert run.name not in names
        names.add(run.name)
        cfg = load_config(sweep.base, list(run.overrides), CONFIG_DIR)  # struct mode: unknown keys raise
        table, row = str(cfg.paper_ref.table), str(cfg.paper_ref.row)
        assert row in rows[table], f"{run.name}: {table}:{row} is not a paper row"
        if table in ("3", "4", "5"):
            assert cfg.align.cls is False  # the note under Table 6


def test_table4_epochs_keep_teacher_tokens_constant():
    sweep = OmegaConf.load(SWEEP_DIR / "table4_masking.yaml")
    for run in sweep.runs:
        cfg = load_config(sweep.base, list(run.overrides), CONFIG_DIR)
        assert cfg.optim.epochs == round(200 * 0.3 / (1 - cfg.mask.ratio))
