"""End to end on the demo world: pre-training helps fine-tuning, and the fine-tuned model is evaluated.

The claim the whole suite exists for, at demo scale: the same fine-tuning recipe reaches a higher
val top-1 from the demo MaskAlign encoder (the session's ``full_demo_encoder``) than from random
initialisation, and a linear probe of it beats one of a random encoder. Then the fine-tuned
classifier goes through the robustness sweep, and COCO and ADE20K runs on the same encoder join
them in the results tables.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from transfer_helpers import robustness_overrides, run_task

from maskalign.config import CONFIG_ROOT, load_config

REPO = Path(__file__).resolve().parents[1]
from maskalign.records import read_record
from maskalign.transfer.metrics import CORRUPTIONS

pytestmark = pytest.mark.slow
CONFIGS = CONFIG_ROOT
# A short schedule of the demo default recipe; the margin is what pre-training must add (points of top-1).
FINETUNE = ["optim.epochs=4", "optim.warmup_epochs=1", "data.num_workers=0", "seed=0"]
MARGIN = 5.0


def _cfg(task: str, *overrides: str):
    cfg = load_config(None, list(overrides), CONFIGS / task)
    return OmegaConf.create(OmegaConf.to_container(cfg))


@pytest.fixture(scope="module")
def finetuned(full_demo_encoder: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:

    out = tmp_path_factory.mktemp("finetune_e2e")
    return {name: run_task("finetune", _cfg("finetune", f"output_dir={out}", f"name={name}", *FINETUNE, *extra),
                               full_demo_encoder)
            for name, extra in (("pretrained", ()), ("scratch", ("model.pretrained=false",)))}


def test_pretraining_beats_random_init(finetuned: dict[str, dict]) -> None:
    pre, scratch = finetuned["pretrained"]["metrics"], finetuned["scratch"]["metrics"]
    print(f"demo fine-tuning top-1: pretrained {pre['top1']:.2f} vs scratch {scratch['top1']:.2f}")
    assert pre["top1"] >= scratch["top1"] + MARGIN
    for name, result in finetuned.items():
        rec = read_record(Path(result["out_dir"]) / "record.json")
        assert rec.task == "finetune" and rec.metrics["top1"] == result["metrics"]["top1"]
        assert rec.method == ("scratch" if name == "scratch" else "maskalign")


def test_robustness_of_the_finetuned_classifier(finetuned: dict[str, dict], tmp_path: Path) -> None:

    ft = finetuned["pretrained"]
    result = run_task("robustness", _cfg("robustness", *robustness_overrides(tmp_path, "name=e2e")), ft["checkpoint"])
    m = result["metrics"]
    assert {"in1k_top1", "in_a_top1", "in_r_top1", "in_sketch_top1", "in_v2_top1", "in_c_mce"} <= set(m)
    assert {f"in_c_ce/{c}" for c in CORRUPTIONS} <= set(m)
    assert all(math.isfinite(v) for v in m.values())
    # the clean number is the fine-tuning job's own val top-1: same images, same eval transform
    assert m["in1k_top1"] == pytest.approx(ft["metrics"]["top1"], abs=1e-6)
    assert result["notes"] == []
    rec = read_record(tmp_path / "robustness" / "e2e" / "record.json")
    assert rec.method == "maskalign" and rec.metrics["in_c_mce"] == pytest.approx(m["in_c_mce"])


@pytest.mark.xdist_group("finetune_e2e_probe")  # needs no fine-tuned model: free to run beside the rest
def test_linear_probe_beats_a_random_encoder(full_demo_encoder: Path, tmp_path: Path) -> None:
    """The frozen demo encoder's [CLS] is linearly more informative than a random encoder's."""
    from ade20k_helpers import fabricate_encoder


    random_enc, _ = fabricate_encoder(tmp_path / "random")
    top1 = {}
    for name, ckpt in (("probe", full_demo_encoder), ("random", random_enc)):
        result = run_task("linprobe", _cfg("linprobe", f"output_dir={tmp_path}", f"name={name}", "optim.epochs=5",
                                   "data.num_workers=0"), ckpt)
        top1[name] = result["metrics"]["top1"]
    # measured: about 20 vs 12 (10 classes: chance is 10)
    print(f"demo linear probe top-1: pretrained {top1['probe']:.2f} vs random encoder {top1['random']:.2f}")
    assert top1["probe"] >= top1["random"] + MARGIN
    rec = read_record(tmp_path / "linprobe" / "probe" / "record.json")
    assert rec.task == "linprobe" and set(rec.metrics) >= {"top1", "top5"}


def test_demo_runs_fill_a_row_of_every_transfer_table(full_demo_encoder: Path, finetuned: dict[str, dict],
                                                       tmp_path: Path) -> None:
    """Pre-train -> fine-tune -> robustness -> COCO -> ADE20K on the demo world, then the tables."""
    import json
    import shutil
    import subprocess
    import sys

    import pandas as pd

    from maskalign.detection import detectron2_available
    from maskalign.results.render_all import make_tables
    from maskalign.segmentation.mmseg_import import mmseg_available

    if not detectron2_available() or not mmseg_available()[0]:
        pytest.skip("needs detectron2 and mmsegmentation (bash install.sh)")
    from conftest import TINY_ROOT

    enc, jobs = str(full_demo_encoder), tmp_path / "jobs"
    # COCO and ADE20K read the tiny world's copies (same image size, 6 and 12 val images): the tables'
    # plumbing is tested here, and the full copy's 50 COCO val images cost a minute of mask-head
    # inference for an untrained detector's 100 boxes each
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASKALIGN_DEMO_ROOT": str(TINY_ROOT), "MASKALIGN_DEMO_SIZE": "tiny"}

    def script(name: str, *args: str) -> None:
        proc = subprocess.run([sys.executable, str(REPO / "transfer" / name), "--local", "--ckpt", enc, *args],
                              cwd=tmp_path, capture_output=True, text=True, timeout=900, env=env, check=False)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]

    # the shortest schedules that still train, evaluate and record: the tables, not the numbers, are tested here
    # 4 iterations at a tiny lr: the table's plumbing, not training (at the recipe's lr, with its warm-up
    # clipped to the run, 4 steps leave the detector without a single box, and COCO reports nothing)
    script("coco_vitdet.py", "--output-dir", str(jobs), "--name", "demo", "dataloader.train.total_batch_size=2",
           "train.max_iter=4", "optimizer.lr=1e-6")
    script("ade20k_upernet.py", "--output-dir", str(jobs), "--name", "demo", "train_cfg.max_iters=4",
           "train_cfg.val_interval=4", "param_scheduler.0.end=2", "param_scheduler.1.begin=2",
           "param_scheduler.1.end=4", "default_hooks.checkpoint.interval=4",
           "+train_dataloader.dataset.indices=4", "+val_dataloader.dataset.indices=8",
           "+test_dataloader.dataset.indices=8")
    run_task("robustness", _cfg("robustness", *robustness_overrides(jobs, "name=demo")),
             finetuned["pretrained"]["checkpoint"])

    root = tmp_path / "records"
    sources = [full_demo_encoder.parent, Path(finetuned["pretrained"]["out_dir"]), jobs / "coco" / "demo",
               jobs / "ade20k" / "demo", jobs / "robustness" / "demo"]
    for i, folder in enumerate(sources):
        rec = json.loads((folder / "record.json").read_text())
        dest = root / rec["task"] / f"run{i}"
        dest.mkdir(parents=True)
        shutil.copy(folder / "record.json", dest / "record.json")

    summary = make_tables(root, tmp_path / "tables")
    assert summary.errors == [] and summary.n_records == len(sources)
    want = {"table1": "FT Acc.", "table2": "AP box", "robustness": "IN-C mCE", "segmentation": "mIoU"}
    for table, column in want.items():
        data = summary.tables[table].data
        filled = pd.to_numeric(data[data["source"] == "ours"][column], errors="coerce").dropna()
        assert len(filled) == 1 and math.isfinite(filled.iloc[0]), (table, data)  # rows still to run stay empty
        assert (tmp_path / "tables" / f"{table}.csv").is_file() and (tmp_path / "tables" / f"{table}.md").is_file()
    t1 = summary.tables["table1"].data
    ft = pd.to_numeric(t1[t1["source"] == "ours"]["FT Acc."], errors="coerce").dropna()
    assert ft.iloc[0] == pytest.approx(finetuned["pretrained"]["metrics"]["top1"], abs=0.05)
