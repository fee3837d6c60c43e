"""A regular (non-editable) install works: configs and reference tables ship inside the wheel.

Builds the wheel, installs it alone into an empty folder, and from another working directory
(with only that folder on the path) loads the default pre-training config, builds a tiny demo
objective, finds every kind of config by name and renders the tables from fixture records.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
from results_fixtures import fabricate

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow

CHECK = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import maskalign
    target = sys.argv[1]
    assert maskalign.__file__.startswith(target), maskalign.__file__
    from maskalign.config import config_dir, default_output_root, load_config
    from maskalign.objectives import build_objective
    from maskalign.results.render_all import make_tables
    from maskalign.sweeps import load_sweep
    from maskalign.tasks import job_for, registered_tasks

    default = load_config(None, [], config_dir("pretrain"))
    tiny = load_config("demo_mae", ["student.img_size=32"], config_dir("pretrain"))  # the demo ViT at 32 px
    objective = build_objective(tiny)
    sweeps = sorted(p.stem for p in config_dir("sweeps").glob("*.yaml"))
    load_sweep(config_dir("sweeps") / (sweeps[0] + ".yaml"))
    found = {name: sorted(p.name for p in task.config_dir.iterdir()) for name, task in registered_tasks().items()}
    summary = make_tables(sys.argv[2], "tables")
    print(json.dumps({
        "default_method": default.method, "objective": type(objective).__name__, "sweeps": sweeps,
        "configs": found, "run_folder": str(job_for("pretrain", output_root=default_output_root()).folder),
        "table1_rows": len(summary.tables["table1"].frame), "written": sorted(Path(p).name for p in summary.written),
        "n_records": summary.n_records,
    }))
""")


def test_wheel_installs_and_runs_from_another_directory(tmp_path: Path) -> None:
    wheels, target, work, records = (tmp_path / d for d in ("wheels", "site", "elsewhere", "records"))
    for d in (target, work):
        d.mkdir()
    # Build from a copy of what the wheel is made of: setuptools builds in the source tree and would
    # leave build/ there (and pack stale files it finds in an old one).
    src = tmp_path / "src"
    shutil.copytree(REPO / "maskalign", src / "maskalign", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(wheels), str(src)], capture_output=True, text=True, timeout=600, check=False)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = wheels.glob("maskalign-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for shipped in ("maskalign/configs/pretrain/default.yaml", "maskalign/configs/sweeps/table3_alignment.yaml",
                    "maskalign/configs/finetune/default.yaml", "maskalign/configs/coco/common/coco_loader_lsj.py",
                    "maskalign/configs/ade20k/upernet_vit_tiny_demo_128.py",
                    "maskalign/results/paper_reference/table1.csv", "maskalign/data/class_lists/imagenet_wnids.txt"):
        assert shipped in names, shipped
    inst = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                           str(wheel)], capture_output=True, text=True, timeout=600, check=False)
    assert inst.returncode == 0, inst.stderr[-3000:]
    fabricate(records)
    env = {k: v for k, v in os.environ.items() if k not in ("MASKALIGN_OUTPUT", "PYTHONPATH")}
    env["PYTHONPATH"] = str(target)
    res = subprocess.run([sys.executable, "-c", CHECK, str(target), str(records)], cwd=work, env=env,
                         capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["default_method"] == "maskalign" and out["objective"] == "MAE"
    assert out["sweeps"] == ["table3_alignment", "table4_masking", "table5_teacher", "table6_adaptation"]
    assert "maskalign_vitb16.yaml" in out["configs"]["finetune"]
    assert "mask_rcnn_vitdet_tiny_demo.py" in out["configs"]["coco"]
    assert "upernet_vit_tiny_demo_128.py" in out["configs"]["ade20k"]
    assert out["run_folder"] == str((work / "output" / "pretrain" / "default").resolve())  # under the working dir
    assert out["n_records"] > 0 and out["table1_rows"] > 0 and "table1.csv" in out["written"]
    assert (work / "tables" / "table1.csv").is_file()
    assert not any(target.rglob("output")) and not (REPO / "tables").exists()
    assert "maskalign/launcher.py" not in names and "maskalign/launch/dispatch.py" in names
