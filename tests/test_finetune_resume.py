"""Fine-tuning resumes from its last checkpoint, keeps best and last, and records its result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from transfer_helpers import TINY_ARCH, mini_imagenet, run_task

from maskalign.checkpoint import export_encoder
from maskalign.config import config_dir, load_config
from maskalign.records import read_record
from maskalign.transfer.classifier import build_classifier, load_classifier


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = build_classifier(TINY_ARCH, 0, kind="finetune", global_pool="token")
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("head")}
    return export_encoder(tmp_path_factory.mktemp("enc") / "tiny", state,
                          {"arch": TINY_ARCH, "method": "mae", "run": "tiny", "pt_epochs": 1})


@pytest.fixture(scope="module")
def mini(tmp_path_factory: pytest.TempPathFactory, tiny_demo_imagenet: Path) -> Path:
    return mini_imagenet(tiny_demo_imagenet, tmp_path_factory.mktemp("mini") / "imagenet")


def _cfg(out: Path, root: Path, *extra: str):
    cfg = load_config(None, [f"output_dir={out}", f"data.root={root}", "name=resume", "data.num_workers=0",
                             "optim.warmup_epochs=0", "optim.total_batch_size=16", *extra],
                      config_dir("finetune"))
    return OmegaConf.create(OmegaConf.to_container(cfg))


def test_rerun_resumes_and_keeps_best_and_last(tmp_path: Path, tiny_encoder: Path, mini: Path, capsys) -> None:
    first = run_task("finetune", _cfg(tmp_path, mini, "optim.epochs=1"), tiny_encoder)
    run_dir = Path(first["out_dir"])
    assert run_dir == tmp_path / "finetune" / "resume"
    assert (run_dir / "checkpoint.pth").is_file() and (run_dir / "checkpoint-best.pth").is_file()
    second = run_task("finetune", _cfg(tmp_path, mini, "optim.epochs=2"), tiny_encoder)
    assert "resumed from" in capsys.readouterr().out
    lines = [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in lines] == [0, 1]  # epoch 0 was not trained again
    assert second["last"]["epoch"] == 2
    rec = read_record(run_dir / "record.json")
    assert rec.task == "finetune" and rec.method == "mae" and rec.run_id == "finetune/resume"
    assert set(rec.metrics) >= {"top1", "top5"} and rec.metrics["top1"] == second["last"]["top1"]
    assert rec.checkpoint["path"] == str((run_dir / "checkpoint.pth").resolve())
    for name in ("checkpoint.pth", "checkpoint-best.pth"):
        model, info = load_classifier(run_dir / name)
        assert info["classes"][0] == "n90000000" and info["classifier"]["kind"] == "finetune"
        with torch.no_grad():
            assert model(torch.randn(2, 3, 64, 64)).shape == (2, 10)
    # a finished run re-run is a no-op that reports the same numbers
    third = run_task("finetune", _cfg(tmp_path, mini, "optim.epochs=2"), tiny_encoder)
    assert third["last"] == second["last"]
    assert len((run_dir / "log.jsonl").read_text().splitlines()) == 2


def test_scratch_baseline_is_recorded_as_such(tmp_path: Path, tiny_encoder: Path, mini: Path) -> None:
    result = run_task("finetune", _cfg(tmp_path, mini, "optim.epochs=1", "model.pretrained=false"), tiny_encoder)
    rec = read_record(Path(result["out_dir"]) / "record.json")
    assert rec.method == "scratch" and rec.pt_epochs == 0 and rec.backbone == "unknown"
