"""Extending the suite without touching it: a k-NN-like protocol and an objective, found as an
installed plug-in (entry points) and as a new in-tree module, each reaching a table row.

Both run in fresh processes, so nothing is registered by this test's own imports: what the
scripts see is what discovery finds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# A 1-nearest-neighbour protocol over the points of a JSON "encoder" file: the shape of a k-NN task
# (a source, a metric, a table) without torch, so the test measures discovery, not training.
TASK_MODULE = textwrap.dedent('''
    import json
    from pathlib import Path

    from maskalign.results.tables import Spec
    from maskalign.tasks import Task, register_task

    @register_task
    class KnnLike(Task):
        name = "knn_like"
        description = "1-NN top-1 of the points in a JSON file"
        metrics = ("knn_like_top1",)

        def check_source(self, ckpt):
            return json.loads(Path(ckpt).read_text())["run"]

        def source_record(self, ctx):
            return {"method": "mae", "backbone": "ViT-S/16", "supervision": "none"}, {"path": ctx.spec.ckpt}, {}

        def run(self, ctx):
            d = json.loads(Path(ctx.spec.ckpt).read_text())
            def nearest(x):
                return min(range(len(d["train"])),
                           key=lambda i: sum((a - b) ** 2 for a, b in zip(d["train"][i], x)))
            hits = [d["train_labels"][nearest(x)] == y for x, y in zip(d["val"], d["val_labels"])]
            return {"metrics": {"knn_like_top1": 100.0 * sum(hits) / len(hits)}}

        def tables(self):
            return (Spec.of_task("knn_like", "k-NN-like protocol", self.name, [("Top-1", "knn_like_top1")]),)
''')

# A cosine regression of each patch's pixels: a complete objective in one module.
OBJECTIVE_MODULE = textwrap.dedent('''
    import torch.nn as nn
    import torch.nn.functional as F

    from maskalign.objectives import Objective, ObjectiveOutput, build_student, register_objective
    from maskalign.objectives.pixels import pixel_targets

    @register_objective("cosine_pixels")
    class CosinePixels(Objective):
        label = "CosinePixels"

        def __init__(self, encoder):
            super().__init__()
            self.encoder = encoder
            self.head = nn.Linear(encoder.embed_dim, encoder.patch_size ** 2 * 3)

        @classmethod
        def check_config(cls, cfg):
            pass

        @classmethod
        def from_config(cls, cfg):
            return cls(build_student(cfg))

        @property
        def forward_ratio(self):
            return 1.0

        @property
        def reconstruct_ratio(self):
            return 1.0

        @property
        def supervision(self):
            return "RGB"

        def forward(self, images):
            pred = self.head(self.encoder(images)[:, 1:])
            loss = 1 - F.cosine_similarity(pred.float(), pixel_targets(images, self.encoder.patch_size), dim=-1).mean()
            return ObjectiveOutput(loss, {})
''')

# What a user of the plug-in runs: its protocol through the one CLI, the tables, the pipeline's stage
# list, and pre-training's objective lookup -- none of them told where the plug-in is.
CHECK = textwrap.dedent('''
    import json, sys
    import torch
    from maskalign.transfer import cli
    from maskalign.results.render_all import make_tables
    from maskalign import pipeline
    from maskalign.config import config_dir, load_config
    from maskalign.objectives import build_objective, method_labels

    ckpt, out = sys.argv[1], sys.argv[2]
    assert cli.run("knn_like", ["--ckpt", ckpt, "--output-dir", out, "--local"]) == 0
    table = make_tables(out, out + "/tables").tables["knn_like"].frame
    stages = [s.name for s in pipeline.parse_stages("finetune,knn_like")]
    cfg = load_config(None, ["method=cosine_pixels", "teacher.backend=none", "student.img_size=32"],
                      config_dir("pretrain"))
    loss = build_objective(cfg)(torch.rand(2, 3, 32, 32)).loss
    print(json.dumps({"rows": table.to_dict("records"), "stages": stages, "loss": float(loss),
                      "label": method_labels().get("cosine_pixels")}))
''')

POINTS = {"run": "points", "train": [[0, 0], [0, 1], [5, 5], [6, 5]], "train_labels": [0, 0, 1, 1],
          "val": [[0.2, 0.1], [5.5, 5.2], [0.1, 4.0], [4.0, 4.0]], "val_labels": [0, 1, 1, 1]}
# By hand: nearest train points are [0,0] (0), [5,5]/[6,5] (1), [0,1] (0: wrong), [5,5] (1): 3 of 4.
EXPECTED_TOP1 = 75.0


def _check(env: dict[str, str], tmp_path: Path) -> dict:
    ckpt = tmp_path / "points.json"
    ckpt.write_text(json.dumps(POINTS))
    res = subprocess.run([sys.executable, "-c", CHECK, str(ckpt), str(tmp_path / "out")], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    record = json.loads((tmp_path / "out" / "knn_like" / "points-default" / "record.json").read_text())
    assert record["task"] == "knn_like" and record["metrics"] == {"knn_like_top1": EXPECTED_TOP1}
    return json.loads(res.stdout.strip().splitlines()[-1])


def _assert_seen(found: dict) -> None:
    (row,) = found["rows"]
    assert row["Method"] == "MAE" and row["Backbone"] == "ViT-S/16" and float(row["Top-1"]) == EXPECTED_TOP1
    assert found["stages"] == ["finetune", "knn_like"]
    assert found["label"] == "CosinePixels" and 0.0 <= found["loss"] <= 2.0


def test_an_installed_plugin_adds_a_protocol_and_an_objective(tmp_path: Path) -> None:
    pkg, site = tmp_path / "plugin", tmp_path / "site"
    (pkg / "knnlike").mkdir(parents=True)
    (pkg / "knnlike" / "__init__.py").write_text("")
    (pkg / "knnlike" / "task.py").write_text(TASK_MODULE)
    (pkg / "knnlike" / "objective.py").write_text(OBJECTIVE_MODULE)
    (pkg / "pyproject.toml").write_text(textwrap.dedent('''
        [build-system]
        requires = ["setuptools>=64"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "maskalign-knnlike"
        version = "0.1"

        [project.entry-points."maskalign.tasks"]
        knn_like = "knnlike.task"

        [project.entry-points."maskalign.objectives"]
        cosine_pixels = "knnlike.objective"

        [tool.setuptools]
        packages = ["knnlike"]
    '''))
    inst = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-q",
                           "--target", str(site), str(pkg)], capture_output=True, text=True, timeout=600, check=False)
    assert inst.returncode == 0, inst.stderr[-3000:]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}
    _assert_seen(_check(env, tmp_path))


def test_a_new_in_tree_module_is_found_without_editing_shared_code(tmp_path: Path) -> None:
    """A copy of the package with one new area (``maskalign/knnlike/task.py``) and one new objective
    module (``maskalign/objectives/cosine_pixels.py``): both found by the package's own discovery."""
    tree = tmp_path / "tree"
    shutil.copytree(REPO / "maskalign", tree / "maskalign", ignore=shutil.ignore_patterns("__pycache__"))
    (tree / "maskalign" / "knnlike").mkdir()
    (tree / "maskalign" / "knnlike" / "__init__.py").write_text("")
    (tree / "maskalign" / "knnlike" / "task.py").write_text(TASK_MODULE)
    (tree / "maskalign" / "objectives" / "cosine_pixels.py").write_text(OBJECTIVE_MODULE)
    env = {**os.environ, "PYTHONPATH": str(tree)}
    _assert_seen(_check(env, tmp_path))


def test_a_broken_plugin_is_one_line_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib.metadata import EntryPoint

    from maskalign import plugins

    ep = EntryPoint(name="broken", value="no_such_module_here", group=plugins.TASKS)
    monkeypatch.setattr(plugins, "entry_points", lambda group: [ep] if group == plugins.TASKS else [])
    monkeypatch.setattr(plugins, "_loaded", set())
    with pytest.raises(plugins.ConfigError, match=r"entry point broken = no_such_module_here of group "
                                                  r"maskalign.tasks cannot be imported \(ModuleNotFoundError"):
        plugins.load_plugins(plugins.TASKS)
