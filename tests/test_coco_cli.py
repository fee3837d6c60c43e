"""transfer/coco_vitdet.py end to end: bad input in one line, resume after a crash, the tiny demo run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from coco_helpers import FAST, make_coco, make_encoder_ckpt, require_detectron2, run_script

require_detectron2()
pytestmark = [
    pytest.mark.filterwarnings("ignore:Importing from timm.models.layers:FutureWarning"),
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:torch.meshgrid:UserWarning"),
]


@pytest.fixture
def one_thread():
    """In-process training with one intra-op thread (see ``coco_helpers.run_script``), restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding coco/ (what --data and $DETECTRON2_DATASETS name)."""
    root = tmp_path_factory.mktemp("coco_world")
    make_coco(root)
    return root


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_encoder_ckpt(tmp_path_factory.mktemp("encoder"))


def _one_line_error(proc, *needles: str) -> None:
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ")
    for n in needles:
        assert n in err, err


def test_checkpoint_that_is_not_a_vit(tmp_path: Path, world: Path) -> None:
    bad = tmp_path / "resnet.pth"
    torch.save({"model": {"conv1.weight": torch.zeros(8, 3, 7, 7), "fc.weight": torch.zeros(10, 8)}}, bad)
    _one_line_error(
        run_script("--ckpt", str(bad), "--data", str(world), "--output-dir", str(tmp_path / "o")),
        str(bad),
        "no ViT encoder",
    )


def test_data_root_that_does_not_exist(tmp_path: Path, encoder: Path) -> None:
    missing = tmp_path / "nowhere"
    _one_line_error(
        run_script("--ckpt", str(encoder), "--data", str(missing), "--output-dir", str(tmp_path / "o")),
        str(missing),
        "no such folder",
    )


def test_annotation_with_broken_image_reference(tmp_path: Path, world: Path, encoder: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(world / "coco", root / "coco")
    ann = root / "coco" / "annotations" / "instances_train2017.json"
    data = json.loads(ann.read_text())
    data["images"][2]["file_name"] = "000000777777.jpg"
    ann.write_text(json.dumps(data))
    _one_line_error(
        run_script("--ckpt", str(encoder), "--data", str(root), "--output-dir", str(tmp_path / "o")),
        "instances_train2017.json",
        "000000777777.jpg",
        "does not exist",
    )


def test_unknown_override_key(tmp_path: Path, world: Path, encoder: Path) -> None:
    _one_line_error(
        run_script(
            "--ckpt",
            str(encoder),
            "--data",
            str(world),
            "--output-dir",
            str(tmp_path / "o"),
            "train.max_iters=3",
        ),
        "train.max_iters",
    )


@pytest.mark.slow  # two detectron2 training runs of the whole job (a crash, then the resume)
def test_crash_mid_training_resumes_from_last_checkpoint(
    tmp_path: Path, world: Path, encoder: Path, monkeypatch: pytest.MonkeyPatch, one_thread: None
) -> None:
    from detectron2.engine import SimpleTrainer

    from maskalign.tasks import JobSpec, TaskJob

    spec = JobSpec(
        task="coco",
        ckpt=str(encoder),
        output_root=str(tmp_path),
        run="run",
        overrides=(*FAST, "train.max_iter=4", "train.checkpointer.period=2"),
        options={"data": str(world)},
    )
    real_step, real_train = SimpleTrainer.run_step, SimpleTrainer.train
    starts = []

    def crashing_step(self):
        if self.iter == 3:
            raise RuntimeError("simulated crash")
        real_step(self)

    def recording_train(self, start_iter, max_iter):
        starts.append(start_iter)
        return real_train(self, start_iter, max_iter)

    monkeypatch.setattr(SimpleTrainer, "train", recording_train)
    monkeypatch.setattr(SimpleTrainer, "run_step", crashing_step)
    with pytest.raises(RuntimeError, match="simulated crash"):
        TaskJob(spec, "maskalign.detection.task")()
    out = tmp_path / "coco" / "run"
    assert (out / "last_checkpoint").read_text().strip() == "model_0000001.pth"
    assert not (out / "record.json").exists()

    monkeypatch.setattr(SimpleTrainer, "run_step", real_step)
    result = TaskJob(spec, "maskalign.detection.task")()
    assert starts == [0, 2]  # the rerun went on from iteration 1's checkpoint
    assert (out / "model_final.pth").is_file() and Path(result["record"]).is_file()
    # and a finished run is only evaluated again
    TaskJob(spec, "maskalign.detection.task")()
    assert starts == [0, 2]


@pytest.mark.slow
def test_tiny_config_trains_on_the_demo_world(tmp_path: Path, world: Path, encoder: Path) -> None:
    out = tmp_path / "coco" / "tiny"
    proc = run_script(
        "--ckpt",
        str(encoder),
        "--data",
        str(world),
        "--output-dir",
        str(tmp_path),
        "--name",
        "tiny",
        *FAST,
        "train.max_iter=30",
        "optimizer.lr=3e-4",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "box AP" in proc.stdout
    losses = [
        json.loads(line)["total_loss"]
        for line in (out / "metrics.json").read_text().splitlines()
        if "total_loss" in line
    ]
    assert len(losses) >= 20
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.8 * first, losses
    rec = json.loads((out / "record.json").read_text())
    assert rec["task"] == "coco" and rec["method"] == "maskalign" and rec["backbone"] == "ViT-demo/8"
    for k in ("ap_box", "ap_mask", "box_ap50", "mask_ap50"):
        assert k in rec["metrics"] and 0.0 <= rec["metrics"][k] <= 100.0
    assert rec["config"]["max_iter"] == 30 and rec["config"]["num_classes"] == 10
    assert rec["source_checkpoint"]["path"] == str(encoder.resolve())

    again = run_script(
        "--ckpt", str(encoder), "--data", str(world), "--output-dir", str(tmp_path), "--name", "tiny", "--eval-only",
        *FAST,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    rec2 = json.loads((out / "record.json").read_text())
    assert rec2["metrics"]["ap_box"] == pytest.approx(rec["metrics"]["ap_box"])


def test_task_pickles_and_requeues_itself(encoder: Path, tmp_path: Path) -> None:
    import pickle

    from maskalign.tasks import JobSpec, TaskJob, get_task

    spec = JobSpec("coco", str(encoder), str(tmp_path), "r", overrides=("train.max_iter=2",))
    task = pickle.loads(pickle.dumps(TaskJob(spec, get_task("coco").module)))
    delayed = task.checkpoint()
    assert isinstance(delayed.function, TaskJob) and delayed.function.spec == spec
