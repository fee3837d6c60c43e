"""Records and tables name an external encoder by family, size and patch: "DINOv2-reg-B/14 (external)"."""

from __future__ import annotations

from pathlib import Path

import encoder_formats as fmts
from maskalign.encoders import encoder_label, load_encoder
from maskalign.encoders.label import external_label
from maskalign.results import fmt


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
