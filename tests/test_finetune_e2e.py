"""End to end on the demo world: pre-training helps fine-tuning, and the fine-tuned model is evaluated.

The claim the whole suite exists for, at demo scale: the same fine-tuning recipe reaches a higher
val top-1 from the demo MaskAlign encoder (the session's ``pretrained_demo``) than from random
initialisation. Then the fine-tuned classifier goes through the robustness sweep and a linear
probe runs on the same encoder.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from transfer_helpers import robustness_overrides

from maskalign.config import REPO_ROOT, load_config
from maskalign.records import read_record
from maskalign.transfer.metrics import CORRUPTIONS

pytestmark = pytest.mark.slow
CONFIGS = REPO_ROOT / "transfer" / "configs"
# A short schedule of the demo default recipe; the margin is what pre-training must add (points of top-1).
FINETUNE = ["optim.epochs=4", "optim.warmup_epochs=1", "data.num_workers=0", "seed=0"]
MARGIN = 5.0
# Both claims below fail today for one reason, measured: the demo teacher reaches only ~17-19% val
# top-1 on the demo world (10 classes) and the students distilled from it probe at ~15% (random
# init ~13%), so neither a short fine-tune nor a linear probe leaves chance. Strict: the day the
# demo world's teacher is good enough, these pass, the run fails, and the marker must go.
WEAK_DEMO_TEACHER = pytest.mark.xfail(strict=True, reason="known gap (issue 5): demo teacher too weak for a transfer signal")


def _cfg(task: str, *overrides: str):
    cfg = load_config(None, list(overrides), CONFIGS / task)
    return OmegaConf.create(OmegaConf.to_container(cfg))


@pytest.fixture(scope="module")
def finetuned(pretrained_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    from maskalign.transfer import finetune

    out = tmp_path_factory.mktemp("finetune_e2e")
    return {name: finetune.run(_cfg("finetune", f"output_dir={out}", f"name={name}", *FINETUNE, *extra),
                               pretrained_demo)
            for name, extra in (("pretrained", ()), ("scratch", ("model.pretrained=false",)))}


@WEAK_DEMO_TEACHER
def test_pretraining_beats_random_init(finetuned: dict[str, dict]) -> None:
    pre, scratch = finetuned["pretrained"]["metrics"], finetuned["scratch"]["metrics"]
    print(f"demo fine-tuning top-1: pretrained {pre['top1']:.2f} vs scratch {scratch['top1']:.2f}")
    assert pre["top1"] >= scratch["top1"] + MARGIN
    for name, result in finetuned.items():
        rec = read_record(Path(result["out_dir"]) / "record.json")
        assert rec.task == "finetune" and rec.metrics["top1"] == result["metrics"]["top1"]
        assert rec.method == ("scratch" if name == "scratch" else "maskalign")


def test_robustness_of_the_finetuned_classifier(finetuned: dict[str, dict], tmp_path: Path) -> None:
    from maskalign.transfer import robustness

    ft = finetuned["pretrained"]
    result = robustness.run(_cfg("robustness", *robustness_overrides(tmp_path, "name=e2e")), ft["checkpoint"])
    m = result["metrics"]
    assert {"in1k_top1", "in_a_top1", "in_r_top1", "in_sketch_top1", "in_v2_top1", "in_c_mce"} <= set(m)
    assert {f"in_c_ce/{c}" for c in CORRUPTIONS} <= set(m)
    assert all(math.isfinite(v) for v in m.values())
    # the clean number is the fine-tuning job's own val top-1: same images, same eval transform
    assert m["in1k_top1"] == pytest.approx(ft["metrics"]["top1"], abs=1e-6)
    assert result["notes"] == []
    rec = read_record(tmp_path / "robustness" / "e2e" / "record.json")
    assert rec.method == "maskalign" and rec.metrics["in_c_mce"] == pytest.approx(m["in_c_mce"])


@WEAK_DEMO_TEACHER
def test_linear_probe_learns(pretrained_demo: Path, tmp_path: Path) -> None:
    from maskalign.transfer import linprobe

    result = linprobe.run(_cfg("linprobe", f"output_dir={tmp_path}", "name=probe", "optim.epochs=3",
                               "data.num_workers=0"), pretrained_demo)
    print(f"demo linear probe top-1: {result['metrics']['top1']:.2f}")
    assert result["metrics"]["top1"] > 30.0  # 10 classes: chance is 10
    rec = read_record(tmp_path / "linprobe" / "probe" / "record.json")
    assert rec.task == "linprobe" and set(rec.metrics) >= {"top1", "top5"}
