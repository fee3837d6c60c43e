"""Records and tables name an external encoder by family, size and patch: "DINOv2-reg-B/14 (external)"."""

from __future__ import annotations

from pathlib import Path

import encoder_formats as fmts
import pytest

from maskalign.encoders import encoder_label, load_encoder
from maskalign.encoders.label import external_label
from maskalign.results import fmt

REPO = Path(__file__).resolve().parents[1]


def test_labels_by_hand() -> None:
    assert external_label("external:dinov2_reg:vit_base_patch14") == "DINOv2-reg-B/14 (external)"
    assert external_label("external:clip_quickgelu:vit_large_patch14") == "CLIP-L/14 (external)"
    assert external_label("external:deit3:vit_small_patch16") == "DeiT III-S/16 (external)"
    assert fmt.method_name("external:beit:vit_base_patch16") == "BEiT-B/16 (external)"
    assert fmt.method_name("maskalign") == "MaskAlign"  # this project's methods unchanged


def test_loaded_encoder_meta_names_its_source(tmp_path: Path) -> None:
    path, _ = fmts.deit3(tmp_path, img_size=32, embed_dim=384, num_heads=6)
    enc = load_encoder(path)
    assert enc.meta["method"] == "external:deit3:vit_small_patch8" and enc.meta["backbone"] == "vit_small_patch8"
    assert encoder_label(enc.meta) == "DeiT III-S/8 (external)" == enc.meta["label"]
    assert fmt.backbone_name(enc.meta["backbone"]) == "ViT-S/8"
    assert len(enc.meta["source"]["sha256"]) == 64 and enc.meta["source"]["path"] == str(path.resolve())


@pytest.mark.parametrize("config", ["demo_mae", "demo_crossmae", "demo_lut", "default"])
def test_this_projects_full_models_load_with_every_tensor_accounted_for(tmp_path: Path, config: str) -> None:
    """``pretrain_model.pth`` of every objective (decoders, EMA branch, DA...) and ``checkpoint.pth``'s model."""
    import torch
    from objective_fixtures import export_random_teacher

    from maskalign.checkpoint import export_encoder
    from maskalign.config import config_dir, load_config
    from maskalign.objectives import build_objective

    overrides = []
    if config == "default":
        teacher = export_random_teacher(tmp_path / "teacher", depth=6)
        overrides = ["teacher.backend=local", f"teacher.checkpoint={teacher}"]
    objective = build_objective(load_config(config, overrides, config_dir("pretrain")))
    path = export_encoder(tmp_path / "run", objective.encoder_state_dict(),
                          {"arch": objective.encoder.arch(), "method": objective.name}, objective.state_dict_to_save())
    # as the engine writes it: the metadata (arch, head count included) travels inside
    torch.save({"model": objective.state_dict(), "epoch": 1, "meta": {"arch": objective.encoder.arch()}},
               tmp_path / "run" / "checkpoint.pth")
    for name in ("pretrain_model.pth", "checkpoint.pth"):
        enc = load_encoder(path.parent / name)
        assert enc.family == "vit" and enc.report.used["blocks.*"] == 12 * objective.encoder.depth
        expected = objective.encoder.state_dict()
        got = enc.model.state_dict()
        assert all(torch.equal(got[k], v) for k, v in expected.items())
