"""make_tables on fabricated records: exact rows, columns, rounding, ordering, missing cells."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pandas as pd
import pytest
from results_fixtures import fabricate, put

from maskalign.results import DEFAULT_REFERENCE_DIR, fmt
from maskalign.results.reference import load_reference
from maskalign.results.render import latex_escape, to_markdown

REPO = Path(__file__).resolve().parents[1]
M = fmt.MISSING


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"_results_{name}", REPO / "results" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_tables = _load_script("make_tables")


def run(root: Path, out: Path, *extra: str) -> int:
    args = make_tables.get_args_parser().parse_args(["--root", str(root), "--out", str(out), *extra])
    return make_tables.main(args)


def read(out: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(out / f"{name}.csv", dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    root = tmp_path_factory.mktemp("output")
    out = tmp_path_factory.mktemp("tables")
    fabricate(root)
    return root, out


@pytest.fixture(scope="module")
def made(tables):
    root, out = tables
    assert run(root, out, "--latex") == 0
    return out


def test_table1_exact(made):
    t = read(made, "table1")
    assert list(t.columns) == [
        "Method",
        "Backbone",
        "Supervision",
        "Forward Ratio",
        "Reconstruct Ratio",
        "Epochs",
        "FT Acc.",
        "LP Acc.",
        "Paper FT Acc.",
        "Δ",
        "Source",
        "Run",
    ]
    paper = t[t["Source"] == "paper"]
    assert list(paper["Method"]) == [
        "SimMIM",
        "MCMAE",
        "MixMIM",
        "CMAE",
        "BEiT",
        "MAE",
        "CAE",
        "MaskFeat",
        "DMAE",
        "data2vec",
        "MVP",
        "BEiT V2",
        "MaskDistill",
        "MILAN",
        "FD-CLIP",
        "MaskAlign",
    ]
    assert paper.iloc[0].tolist() == [
        "SimMIM",
        "Swin-B",
        "RGB",
        "100%",
        "60%",
        "800",
        "84.0",
        "",
        "",
        "",
        "paper",
        "",
    ]
    ours = t[t["Source"] == "ours"].values.tolist()
    assert ours == [
        ["MAE", "ViT-B/16", "RGB", "25%", "75%", "1600", "83.0", M, "83.6", "-0.6", "ours", "ft-mae"],
        ["FD-CLIP", M, M, M, M, M, M, M, "84.9", M, "ours", M],
        # newest of the two maskalign runs, which was tagged with the same_as row 6:linear-ln-cls
        [
            "MaskAlign",
            "ViT-B/16",
            "CLIP-B",
            "30%",
            "0%",
            "200",
            "85.3",
            "70.0",
            "85.4",
            "-0.1",
            "ours",
            "ft-ma-new; LP lp-ma",  # every run behind the row's cells
        ],
        # untagged: an extra row, no paper number; 12.5% keeps its decimal
        ["CrossMAE", "ViT-B/16", "RGB", "25%", "12.5%", "400", "82.1", M, "", "", "ours", "ft-crossmae"],
    ]
    assert len(t) == 16 + 4


def test_table2_exact(made):
    t = read(made, "table2")
    assert list(t.columns) == [
        "Method",
        "Backbone",
        "Supervision",
        "PT Epochs",
        "AP box",
        "AP mask",
        "Paper AP box",
        "Δ AP box",
        "Paper AP mask",
        "Δ AP mask",
        "Source",
        "Run",
    ]
    assert t.iloc[0].tolist() == [
        "Supervised",
        "ViT-B/16",
        "IN-1K Label",
        "-",
        "47.9",
        "42.9",
        "",
        "",
        "",
        "",
        "paper",
        "",
    ]
    assert t[t["Source"] == "ours"].values.tolist() == [
        ["MAE", M, M, M, M, M, "50.3", M, "44.9", M, "ours", M],
        ["MaskAlign", "ViT-B/16", "CLIP-B", "200", "50.1", "44.4", "52.1", "-2.0", "45.7", "-1.3", "ours", "coco-ma"],
    ]


def test_ablation_tables_exact(made):
    t3 = read(made, "table3")
    assert list(t3.columns) == ["Model", "Align Type", "Top K", "FT Acc.", "Paper FT Acc.", "Δ", "Run"]
    assert t3.values.tolist() == [
        ["ViT-B/16", "Dynamic", "1", "84.9", "84.9", "+0.0", "ft-top1"],
        ["ViT-B/16", "Dynamic", "3", M, "85.1", M, M],
        ["ViT-B/16", "Dynamic", "5", "85.0", "85.3", "-0.3", "ft-top5"],
        ["ViT-B/16", "Dynamic", "7", M, "85.1", M, M],
        ["ViT-B/16", "Layer-wise", "1", M, "84.8", M, M],
        ["ViT-B/16", "Layer-wise", "5", M, "85.1", M, M],
    ]
    t4 = read(made, "table4")
    assert list(t4.columns) == ["Mask Type", "Mask Ratio", "FT Acc.", "Paper FT Acc.", "Δ", "Run"]
    assert list(t4["Mask Ratio"]) == ["0%", "20%", "40%", "60%", "70%", "75%", "80%", "90%", "70%"]
    assert t4.iloc[2].tolist() == ["Attentive", "40%", "85.6", "85.2", "+0.4", "ft-mask40"]
    assert t4.iloc[4].tolist() == [
        "Attentive",
        "70%",
        "85.0",
        "85.3",
        "-0.3",
        "ft-top5",
    ]  # same_as 3:dynamic-top5
    assert t4.iloc[8].tolist() == ["Random", "70%", M, "85.1", M, M]
    t5 = read(made, "table5")
    assert list(t5.columns) == ["Model", "Teacher Model", "S-FT Acc.", "Paper S-FT Acc.", "Δ", "Run"]
    assert t5.iloc[1].tolist() == ["ViT-B/16", "CLIP-B", "85.0", "85.3", "-0.3", "ft-top5"]
    t6 = read(made, "table6")
    assert list(t6.columns) == ["Model", "Adaptor", "Norm", "[CLS]", "FT Acc.", "Paper FT Acc.", "Δ", "Run"]
    assert t6.iloc[0].tolist() == ["ViT-B/16", "Linear", "LN", "w/", "85.3", "85.4", "-0.1", "ft-ma-new"]
    assert t6.iloc[1].tolist() == ["ViT-B/16", "Linear", "LN", "w/o", "85.0", "85.3", "-0.3", "ft-top5"]


def test_table7_time_normalised_to_maskalign(made):
    t = read(made, "table7")
    assert list(t.columns) == [
        "Model",
        "Epochs",
        "Time",
        "FT Acc.",
        "Sec/Iter",
        "Paper Time",
        "Paper FT Acc.",
        "Δ",
        "Source",
        "Run",
    ]
    assert t[t["Source"] == "paper"]["Time"].tolist() == ["2.8×", "2.8×", "3.2×", "2.8×", "1.0×"]
    assert t[t["Source"] == "ours"].values.tolist() == [
        # 0.9 s/it x 300 ep / (0.5 s/it x 200 ep) = 2.7
        ["FD-CLIP", "300", "2.7×", M, "0.900", "2.8×", "84.9", M, "ours", "speed-fd"],
        ["MaskAlign", "200", "1.0×", "85.3", "0.500", "1.0×", "85.4", "-0.1", "ours", "speed-ma"],
        # not a row of the paper's Table 7: an extra row, its FT Acc. from the Table-1 "mae" run
        ["MAE", "1600", "4.8×", "83.0", "0.300", "", "", "", "ours", "speed-mae"],
    ]


def test_robustness_and_segmentation(made):
    r = read(made, "robustness")
    assert list(r.columns) == [
        "Method",
        "Backbone",
        "Supervision",
        "Epochs",
        "IN-1K",
        "IN-A",
        "IN-R",
        "IN-Sketch",
        "IN-V2",
        "IN-C mCE",
        "Run",
    ]
    assert r.values.tolist() == [
        ["MAE", *[M] * 10],
        ["FD-CLIP", *[M] * 10],
        ["MaskAlign", "ViT-B/16", "CLIP-B", "200", "85.3", "40.0", "55.6", "40.0", "75.0", "45.1", "rob-ma"],
    ]
    c = read(made, "robustness_in_c")
    assert c.values.tolist() == [["MaskAlign", "30.0", "50.1", "45.1", "rob-ma"]]
    s = read(made, "segmentation")
    assert list(s.columns) == ["Method", "Backbone", "Supervision", "Epochs", "mIoU", "aAcc", "Run"]
    assert s.values.tolist()[-1] == [
        "MaskAlign [3:dynamic-top5]",
        "ViT-B/16",
        "CLIP-B",
        "200",
        "48.0",
        "82.5",
        "ade-top5",
    ]
    assert s["Method"].tolist()[:3] == ["MAE", "FD-CLIP", "MaskAlign"]


def test_every_format_written(made):
    names = [
        "table1",
        "table2",
        "table3",
        "table4",
        "table5",
        "table6",
        "table7",
        "robustness",
        "robustness_in_c",
        "segmentation",
    ]
    for name in names:
        for ext in ("csv", "md", "tex"):
            assert (made / f"{name}.{ext}").stat().st_size > 0, f"{name}.{ext}"
    md = (made / "table3.md").read_text()
    assert "| Model | Align Type | Top K | FT Acc. | Paper FT Acc. | Δ | Run |" in md
    tex = (made / "table4.tex").read_text()
    assert r"\toprule" in tex and r"Attentive & 40\% & 85.6 & 85.2 & +0.4 & ft-mask40 \\" in tex
    assert not list(made.glob(".*.tmp"))


def test_missing_runs_printed_and_reruns_noted(tables, tmp_path, capsys):
    root, _ = tables
    assert run(root, tmp_path) == 0
    out = capsys.readouterr().out
    assert (
        "table3: missing dynamic-top3, dynamic-top7, layerwise-top1, layerwise-top5 (no finetune record"
        in out
    )
    assert 'paper_ref {"table": "3", "row": <key>}' in out
    assert "table1: missing fd-clip " in out
    assert "table2: missing mae " in out
    assert "using the newest, ft-ma-new" in out and "ignored ft-ma-old" in out
    assert run(root, tmp_path, "--strict") == 1


def test_empty_root_still_writes_every_table(tmp_path, capsys):
    out = tmp_path / "out"
    assert run(tmp_path / "nothing", out) == 0
    t3 = read(out, "table3")
    assert len(t3) == 6 and set(t3["FT Acc."]) == {M}
    assert "table4: missing attentive-0, attentive-20" in capsys.readouterr().out


def test_record_without_metric_is_missing_with_note(tmp_path, capsys):
    put(tmp_path / "o", "finetune", "ft-nometric", row="dynamic-top3", table="3", metrics={"top5": 97.0})
    assert run(tmp_path / "o", tmp_path / "t") == 0
    t3 = read(tmp_path / "t", "table3")
    assert t3.iloc[1].tolist() == ["ViT-B/16", "Dynamic", "3", M, "85.1", M, "ft-nometric"]
    assert "has no metric 'top1'" in capsys.readouterr().out


def test_formatting_rules():
    assert fmt.percent(0.3) == "30%" and fmt.percent(0.0) == "0%" and fmt.percent(1.0) == "100%"
    assert fmt.percent(0.125) == "12.5%" and fmt.percent(None) == M
    assert fmt.one_decimal(85.26) == "85.3" and fmt.one_decimal(float("nan")) == M
    assert fmt.delta(85.4, 85.4) == "+0.0" and fmt.delta(85.04, 85.1) == "-0.1" and fmt.delta(None, 85.0) == M
    assert fmt.delta(85.0, None) == ""
    assert fmt.parse_cell("30%") == pytest.approx(0.3) and fmt.parse_cell("2.8×") == 2.8
    assert fmt.parse_cell("-") is None
    assert fmt.backbone_name("vit_large_patch16_224") == "ViT-L/16" and fmt.backbone_name("swin") == "swin"
    assert fmt.supervision_name("clip_vit_b16") == "CLIP-B" and fmt.supervision_name("CLIP-B/16") == "CLIP-B"
    assert fmt.supervision_name("DINO-B/16") == "DINO-B" and fmt.supervision_name("pixel") == "RGB"
    assert latex_escape("CLIP-L₁₉₆ 30% Δ") == r"CLIP-L$_{196}$ 30\% $\Delta$"
    assert to_markdown(pd.DataFrame({"a|b": ["x"]})).splitlines()[0] == r"| a\|b |"


def test_reference_equivalences():
    ref = load_reference(DEFAULT_REFERENCE_DIR)
    assert ref.group("3", "dynamic-top5") == [
        ("3", "dynamic-top5"),
        ("4", "attentive-70"),
        ("5", "vitb16-clipb16"),
        ("6", "linear-ln-nocls"),
    ]
    assert ("7", "maskalign") in ref.group("6", "linear-ln-cls")
    assert ref.expected("1") == ["mae", "fd-clip", "maskalign"]
    # every table's paper number equals across same_as rows
    for table, frame in ref.tables.items():
        for key in frame.index:
            for other_table, other_key in ref.group(table, key):
                for col in ("FT Acc.", "S-FT Acc."):
                    a, b = ref.value(table, key, col), ref.value(other_table, other_key, col)
                    if a is not None and b is not None:
                        assert a == b, (table, key, other_table, other_key)


def test_script_runs_from_repo_root(tmp_path):
    import subprocess

    res = subprocess.run(
        [
            sys.executable,
            "results/make_tables.py",
            "--root",
            str(tmp_path / "none"),
            "--out",
            str(tmp_path / "t"),
        ],
        cwd=REPO,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "t" / "table1.csv").is_file()
