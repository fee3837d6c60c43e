"""The frozen-feature tasks end to end on the demo world (``slow``): k-NN, DINOv2's linear grid
(``linprobe --config dinov2_grid``) and the attentive probe, each from this project's encoder
and from a published-format file (DINOv2 with registers, official layout), through the entry
point and the launcher (``--local``), each writing a record and a row of its table."""

from __future__ import annotations

from pathlib import Path

import encoder_formats as fmts
import pytest
from ade20k_helpers import fabricate_encoder
from omegaconf import OmegaConf
from transfer_helpers import run_task

from maskalign.config import config_dir, load_config
from maskalign.records import read_record
from maskalign.results.fmt import parse_cell
from maskalign.results.render_all import make_tables
from maskalign.transfer import cli

pytestmark = pytest.mark.slow
SHORT = ["data.num_workers=0", "seed=0"]
TRAIN_SHORT = ["optim.epochs=1", "runtime.max_steps=2", *SHORT]
# task, config, overrides, the table its record fills, a column of that table
RUNS = [("knn", None, SHORT, "knn", "k=20"),
        ("linprobe", "dinov2_grid", [*TRAIN_SHORT, "grid.lrs=[0.01,0.1]"], "linear_grid", "Top-1"),
        ("attentive", None, TRAIN_SHORT, "attentive", "Top-1")]


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("frozen_sources")
    ours, _ = fabricate_encoder(root / "ours")
    return {"ours": str(ours), "dinov2_reg": fmts.demo_sized(root / "dinov2_reg", "dinov2_reg")}


@pytest.mark.parametrize("source", ["ours", "dinov2_reg"])
def test_frozen_protocols_write_records_and_table_rows(sources: dict[str, str], source: str, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    for task, config, overrides, _, _ in RUNS:
        args = ["--ckpt", sources[source], "--output-dir", str(out), "--name", f"{task}-{source}", "--local",
                *(["--config", config] if config else []), *overrides]
        assert cli.run(task, args) == 0, capsys.readouterr().err[-2000:]
        rec = read_record(out / task / f"{task}-{source}" / "record.json")
        assert rec.task == task and 0.0 <= rec.metrics["top1"] <= 100.0
        if source == "dinov2_reg":
            assert rec.method.startswith("external:dinov2_reg") and rec.config["encoder"]["family"] == "dinov2_reg"
        else:
            assert rec.method == "maskalign"
    grid = read_record(out / "linprobe" / f"linprobe-{source}" / "record.json")
    assert grid.config["protocol"] == "dinov2" and grid.config["winner"]["name"].startswith("blocks")
    knn = read_record(out / "knn" / f"knn-{source}" / "record.json")
    assert {f"knn{k}_top1" for k in (10, 20, 100, 200)} <= set(knn.metrics)
    assert knn.metrics["top1"] == knn.metrics["knn20_top1"]

    summary = make_tables(out, tmp_path / "tables")
    for task, _, _, table, column in RUNS:
        frame = summary.tables[table].frame
        row = frame[frame["Run"] == f"{task}/{task}-{source}"]
        assert len(row) == 1, (table, frame.to_string())
        assert parse_cell(row[column].iloc[0]) is not None
    lp = summary.tables["table1"].frame
    assert not (lp["Run"] == f"linprobe/linprobe-{source}").any()  # the grid is not Table 1's LP column


def test_a_second_knn_run_reads_the_cached_features(sources: dict[str, str], tmp_path: Path) -> None:

    def cfg(*extra: str):
        c = load_config(None, [f"output_dir={tmp_path}", "name=cached", *SHORT, *extra], config_dir("knn"))
        return OmegaConf.create(OmegaConf.to_container(c))

    first = run_task("knn", cfg(), sources["ours"])
    assert first["images_encoded"] == 1500  # the demo world: 1200 train + 300 val images
    again = run_task("knn", cfg("knn.ks=[1,20]", "knn.temperature=0.1", "knn.query_chunk=7", "knn.bank_chunk=100"),
                    sources["ours"])
    assert again["images_encoded"] == 0 and set(again["per_k"]) == {"1", "20"}
    same = run_task("knn", cfg("knn.query_chunk=7", "knn.bank_chunk=100"), sources["ours"])
    assert same["images_encoded"] == 0 and same["metrics"] == first["metrics"]


def test_knn_on_two_processes_equals_one(sources: dict[str, str], full_demo_imagenet: Path, tmp_path: Path) -> None:
    """Each process encodes its shard; the banks are gathered back into data-set order, so two
    processes (gloo, CPU) give the one-process features and numbers; one record, one cache."""
    import json
    import os
    import shutil
    import subprocess
    import sys

    import torch
    from transfer_helpers import mini_imagenet

    mini = mini_imagenet(full_demo_imagenet, tmp_path / "mini")
    args = [f"data.root={mini}", "data.dataset=imagenet", "data.batch_size=8", *SHORT]
    script = str(Path(__file__).resolve().parents[1] / "transfer" / "knn.py")
    assert cli.run("knn", ["--ckpt", sources["ours"], "--output-dir", str(tmp_path), "--name", "one", "--local",
                           *args]) == 0
    torchrun = shutil.which("torchrun")
    cmd = [torchrun] if torchrun else [sys.executable, "-m", "torch.distributed.run"]
    # no --local: torchrun's ranks run here, with or without SLURM on the machine
    res = subprocess.run([*cmd, "--nproc_per_node", "2", "--master_port", "29631", script, "--ckpt",
                          sources["ours"], "--output-dir", str(tmp_path), "--name", "two", *args],
                         capture_output=True, text=True, timeout=600, env=dict(os.environ), check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = res.stdout + res.stderr
    assert out.count("running knn:two") == 2 and out.count("[knn] encoder ") == 1  # two ranks, one world
    one, two = tmp_path / "knn" / "one", tmp_path / "knn" / "two"
    assert read_record(two / "record.json").metrics == read_record(one / "record.json").metrics
    for split in ("train", "val"):
        a, b = torch.load(one / "features" / f"{split}.pt"), torch.load(two / "features" / f"{split}.pt")
        assert torch.equal(a["labels"], b["labels"]) and torch.allclose(a["features"], b["features"], atol=1e-5)
    assert json.loads((two / "knn.json").read_text()) == json.loads((one / "knn.json").read_text())


def test_the_grid_probe_resumes_where_it_stopped(sources: dict[str, str], tmp_path: Path) -> None:
    """Stopped after its first epoch and run again, the grid ends where an uninterrupted run ends:
    the heads, their momentum buffers and the sampler's epoch come back from ``checkpoint.pth``."""
    import json

    import torch


    def cfg(name: str, *extra: str):
        c = load_config("dinov2_grid", [f"output_dir={tmp_path}", f"name={name}", "optim.epochs=2",
                                        "grid.lrs=[0.01,0.1]", "optim.total_batch_size=256", *SHORT, *extra],
                        config_dir("linprobe"))
        return OmegaConf.create(OmegaConf.to_container(c))

    straight = run_task("linprobe", cfg("straight"), sources["ours"])
    # 1080 train images / 256: 4 steps an epoch
    run_task("linprobe", cfg("resumed", "runtime.max_steps=4"), sources["ours"])
    assert torch.load(tmp_path / "linprobe" / "resumed" / "checkpoint.pth")["epoch"] == 1
    resumed = run_task("linprobe", cfg("resumed"), sources["ours"])
    a = torch.load(tmp_path / "linprobe" / "straight" / "checkpoint.pth")
    b = torch.load(tmp_path / "linprobe" / "resumed" / "checkpoint.pth")
    assert a["epoch"] == b["epoch"] == 2 and a["step"] == b["step"] == 8
    for k in a["grid"]:
        assert torch.equal(a["grid"][k], b["grid"][k]), k
    assert resumed["metrics"] == straight["metrics"] and resumed["winner"] == straight["winner"]
    log = (tmp_path / "linprobe" / "resumed" / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in log] == [0, 1]  # the second run trained epoch 2 only
