"""Tables of many encoders: one row per file, labels for people, seeds aggregated, nothing dropped silently.

The records are written by the real recorder from real (tiny) published-format files kept in one
folder, as a user comparing encoders has them; the expected cells are computed here by hand.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import torch
from encoder_formats import clip, deit3, timm_model

from maskalign.results import fmt
from maskalign.results.render_all import make_tables
from maskalign.tasks import JobSpec, RunContext, get_task
from maskalign.tasks.spec import run_folder

S = {"embed_dim": 384, "num_heads": 6}  # ViT-S width, two blocks, 32 px


def _mae_file(folder: Path) -> Path:
    """An MAE pre-training file of a ViT-S: ``{"model": encoder + decoder}``."""
    state = dict(timm_model("vit_small_patch16_224", 32, patch_size=8, **S).state_dict())
    state.update({"mask_token": torch.zeros(1, 1, 32), "decoder_embed.weight": torch.zeros(32, 384),
                  "decoder_pred.weight": torch.zeros(192, 32)})
    path = folder / "vit_small_pretrain.pth"  # the name says nothing; the decoder does
    torch.save({"model": state, "epoch": 799}, path)
    return path


def _record(root: Path, task: str, run: str, ckpt: str, top1: float, seed: int = 0, **config) -> None:
    """The record a job of ``task`` writes for these metrics, through the run context as a job does."""
    spec = JobSpec(task=task, ckpt=ckpt, output_root=str(root), run=run,
                   resolved={"seed": seed, "optim": {"epochs": 100}, **config})
    RunContext(get_task(task), spec).write_record({"top1": top1, "top5": 99.0})


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    enc = tmp_path_factory.mktemp("encoders")  # every file in one folder
    root = tmp_path_factory.mktemp("output")
    mae = str(_mae_file(enc))
    clip_file = f"{clip(enc)[0]}#num_heads=2"
    other = enc / "deit3_64px.pth"  # the same family and size, other weights: a row of its own
    deit3(enc, img_size=64, **S)[0].rename(other)
    sup = str(deit3(enc, **S)[0])
    _record(root, "finetune", "other-ft", str(other), 75.0)
    _record(root, "finetune", "mae-ft", mae, 82.0)
    _record(root, "linprobe", "mae-lp", mae, 60.0)
    for seed, top1 in enumerate((80.0, 81.0, 83.0)):  # three seeds of one experiment
        _record(root, "finetune", f"deit3-ft-s{seed}", sup, top1, seed=seed)
    _record(root, "linprobe", "clip-lp", clip_file, 70.0)  # a probe and no fine-tune
    summary = make_tables(root)
    return root, summary


def _ours(summary, name):
    """Our rows that have records (rows the paper expects and no record fills print as missing)."""
    t = summary.tables[name].frame
    t = t[t["Source"] == "ours"] if "Source" in t else t
    return t[t["Run"] != fmt.MISSING]


def test_two_files_two_rows_and_a_probe_only_encoder_has_its_row(made) -> None:
    _, summary = made
    t1 = _ours(summary, "table1").set_index("Method")
    assert sorted(t1.index) == ["CLIP (clip_openai.pt)", "DeiT III (deit3.pth)", "DeiT III (deit3_64px.pth)",
                                "MAE (vit_small_pretrain.pth)"]
    assert t1.loc["DeiT III (deit3_64px.pth)", "FT Acc."] == "75.0"
    assert t1.loc["MAE (vit_small_pretrain.pth)", "FT Acc."] == "82.0"
    assert t1.loc["MAE (vit_small_pretrain.pth)", "LP Acc."] == "60.0"
    assert t1.loc["CLIP (clip_openai.pt)", "FT Acc."] == fmt.MISSING
    assert t1.loc["CLIP (clip_openai.pt)", "LP Acc."] == "70.0"
    assert t1.loc["CLIP (clip_openai.pt)", "Run"] == "LP linprobe/clip-lp"


def test_supervised_and_self_supervised_vit_s_side_by_side_labelled_for_people(made) -> None:
    _, summary = made
    t1 = _ours(summary, "table1").set_index("Method")
    assert t1.loc["MAE (vit_small_pretrain.pth)", "Supervision"] == "RGB"  # recognised by its decoder
    assert t1.loc["DeiT III (deit3.pth)", "Supervision"] == "Supervised"
    assert t1.loc["CLIP (clip_openai.pt)", "Supervision"] == "Image-text"
    assert t1["Backbone"].to_dict() == {"MAE (vit_small_pretrain.pth)": "ViT-S/8", "DeiT III (deit3.pth)": "ViT-S/8",
                                        "DeiT III (deit3_64px.pth)": "ViT-S/8", "CLIP (clip_openai.pt)": "ViT-w64/8"}
    for result in summary.tables.values():
        for cell in result.frame.astype(str).values.ravel():
            assert "external:" not in cell and "[~" not in cell, cell
    assert "Backbone" in summary.tables["table2"].frame.columns


def test_three_seeds_print_mean_std_n(made) -> None:
    _, summary = made
    t1 = _ours(summary, "table1").set_index("Method")
    vals = [80.0, 81.0, 83.0]
    mean, std = statistics.mean(vals), statistics.stdev(vals)
    assert t1.loc["DeiT III (deit3.pth)", "FT Acc."] == f"{mean:.1f} ± {std:.1f} (3)"
    assert t1.loc["DeiT III (deit3.pth)", "Run"].count("finetune/deit3-ft-s") == 3


def test_every_record_is_in_a_table_and_the_tables_go_under_the_output_root(made) -> None:
    root, summary = made
    assert summary.left_out == []
    assert any(line.startswith("table1: 4 rows of ours from 7 records") for line in summary.grouped), summary.grouped
    assert summary.out == root / "tables" and (root / "tables" / "table1.csv").is_file()


def test_another_config_of_the_same_file_is_left_out_with_its_reason(tmp_path: Path) -> None:
    enc, root = tmp_path / "enc", tmp_path / "out"
    enc.mkdir()
    sup = str(deit3(enc, **S)[0])
    _record(root, "finetune", "short", sup, 70.0, optim={"epochs": 10})
    path = run_folder(root, "finetune", "short") / "record.json"  # finished a day earlier
    path.write_text(json.dumps({**json.loads(path.read_text()), "end_time": "2026-01-01T00:00:00+00:00"}))
    _record(root, "finetune", "long", sup, 80.0, optim={"epochs": 100})
    summary = make_tables(root, tmp_path / "tables")
    t1 = _ours(summary, "table1")
    assert list(t1["FT Acc."]) == ["80.0"]
    (line,) = summary.left_out
    assert "short" in line and "another config of the same encoder" in line
