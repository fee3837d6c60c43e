"""TensorBoard logging: event files in the run folder hold what the loops logged, read back with
TensorBoard's own event reader; detectron2's and mmengine's writers land in the same place."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import pretrain_cfg
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transfer_helpers import TINY_ARCH, mini_imagenet, run_task

from maskalign.errors import UserError
from maskalign.monitor import Monitor, TrainMonitor, matrix_image, mmseg_tensorboard


def _events(folder: Path) -> EventAccumulator:
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def _series(acc: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_scalars_and_images_read_back(tmp_path: Path) -> None:
    mon = Monitor(tmp_path)
    mon.scalars({"a": 1.5, "b": torch.tensor(2.0)}, step=3, prefix="x/")
    mon.scalar("x/a", 0.25, step=4)
    mon.image("m", torch.ones(3, 4, 6) * 0.5, step=3)
    mon.close()
    acc = _events(tmp_path / "tensorboard")
    assert _series(acc, "x/a") == [(3, 1.5), (4, 0.25)] and _series(acc, "x/b") == [(3, 2.0)]
    img = acc.Images("m")[0]
    assert (img.height, img.width, img.step) == (4, 6, 3)


def test_other_ranks_write_nothing(tmp_path: Path) -> None:
    mon = TrainMonitor(tmp_path, is_main=False, device=torch.device("cpu"), log_every=1)
    for it, _ in enumerate(mon.timed(range(3))):
        mon.iteration(it, it, torch.tensor(1.0), {}, 0.1, 8)
    mon.epoch(1, {"loss": 1.0})
    mon.close()
    assert not (tmp_path / "tensorboard").exists()


def test_wandb_asked_for_but_absent_is_one_line(tmp_path: Path) -> None:
    pytest.importorskip("torch.utils.tensorboard")
    try:
        import wandb  # noqa: F401
        pytest.skip("wandb is installed here")
    except ImportError:
        pass
    (tmp_path / "config.yaml").write_text("logging:\n  wandb: true\n")
    with pytest.raises(UserError, match=r"^logging.wandb=true needs the wandb package \(pip install wandb\)"):
        TrainMonitor(tmp_path, is_main=True, device=torch.device("cpu"))


def test_matrix_image_keeps_rows_and_columns() -> None:
    """Row i, column j of W is the cell at (i, j): the maximum in the top-right corner is yellow."""
    w = torch.zeros(5, 4)
    w[0, 3] = 1.0
    img = matrix_image(w, cell=3)
    assert img.shape == (3, 15, 12)
    top_right, bottom_left = img[:, 1, 10], img[:, 14, 0]
    assert top_right[0] > 0.9 and top_right[2] < 0.2  # viridis at 1: (0.99, 0.91, 0.14)
    assert bottom_left[2] > 0.3 and bottom_left[0] < 0.3  # viridis at 0: (0.27, 0.00, 0.33)


def test_data_wait_fraction_is_the_time_spent_in_the_loader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a clock of the test's own (never the machine's speed): each batch takes 0.05 s to arrive
    and each step 0.15 s, so a quarter of the time is spent waiting, and 4 x 10 images in 0.8 s."""
    import types

    import maskalign.monitor

    now = [100.0]
    monkeypatch.setattr(maskalign.monitor, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))

    def loader():
        for i in range(4):
            now[0] += 0.05
            yield i

    mon = TrainMonitor(tmp_path, is_main=True, device=torch.device("cpu"), log_every=4)
    for it, _ in enumerate(mon.timed(loader())):
        now[0] += 0.15  # the step
        mon.iteration(it, it + 1, torch.tensor(0.0), {}, 1e-3, 10)
    mon.close()
    acc = _events(tmp_path / "tensorboard")
    (step, frac), = _series(acc, "train/data_wait_fraction")
    assert step == 4 and frac == pytest.approx(0.25)
    (_, ips), = _series(acc, "train/images_per_s")
    assert ips == pytest.approx(40 / 0.8)


def test_mmseg_config_gets_a_tensorboard_backend(tmp_path: Path) -> None:
    pytest.importorskip("mmengine")
    from mmengine.config import ConfigDict
    from mmengine.registry import VISBACKENDS
    from mmengine.visualization import TensorboardVisBackend  # noqa: F401 -- registers it

    cfg = ConfigDict(visualizer={"type": "SegLocalVisualizer", "vis_backends": [{"type": "LocalVisBackend"}],
                                 "name": "visualizer"})
    mmseg_tensorboard(cfg, tmp_path)
    mmseg_tensorboard(cfg, tmp_path)  # idempotent
    backends = cfg.visualizer.vis_backends
    assert [b["type"] for b in backends] == ["LocalVisBackend", "TensorboardVisBackend"]
    tb = VISBACKENDS.build(dict(backends[1]))
    tb.add_scalar("loss", 0.5, step=7)
    tb.close()
    assert _series(_events(tmp_path / "tensorboard"), "loss") == [(7, 0.5)]


def test_detectron2_writer_writes_into_the_run_folder(tmp_path: Path) -> None:
    pytest.importorskip("detectron2")
    from detectron2.utils.events import EventStorage

    from maskalign.monitor import detectron2_writer

    writer = detectron2_writer(tmp_path)
    with EventStorage(start_iter=5) as storage:
        storage.put_scalar("total_loss", 1.25, smoothing_hint=False)
        writer.write()
    writer.close()
    assert _series(_events(tmp_path / "tensorboard"), "total_loss") == [(5, 1.25)]


@pytest.mark.slow
def test_default_demo_run_writes_its_scalars_and_W(tmp_path: Path, full_demo_teacher: Path,
                                                  full_demo_imagenet: Path) -> None:
    """The first run of the README at tiny length: the event file holds per-iteration scalars whose
    lr follows the warm-up formula, epoch scalars equal to log.jsonl's, and W as an image."""
    from maskalign.engine.pretrain import train

    cfg = pretrain_cfg(tmp_path, "name=tb", "data.num_workers=0", "optim.epochs=2", "runtime.max_steps=4",
                       "runtime.log_every=2", "logging.image_every=1")
    iters = sum(1 for _ in (full_demo_imagenet / "train").rglob("*.*")) // int(cfg.optim.total_batch_size)
    train(cfg)
    run = tmp_path / "pretrain" / "tb"
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    acc = _events(run / "tensorboard")
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/align_loss", "train/lr", "train/images_per_s", "train/data_wait_fraction",
            "epoch/loss", "epoch/data_wait_fraction"} <= tags, tags
    lr0 = float(cfg.optim.blr) * int(cfg.optim.total_batch_size) / 256
    lrs = _series(acc, "train/lr")
    assert [s for s, _ in lrs] == [2, 4]  # logged after iterations 1 and 3 (0-based), at the step count
    for (_, v), it in zip(lrs, (1, 3)):
        expected = lr0 * (it / iters) / float(cfg.optim.warmup_epochs)  # linear warm-up, set at iteration start
        assert math.isclose(v, expected, rel_tol=1e-5), (v, expected)
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    (step, loss), = _series(acc, "epoch/loss")
    assert step == 4 and math.isclose(loss, log[0]["loss"], rel_tol=1e-6)
    assert all(0.0 <= v <= 1.0 for _, v in _series(acc, "train/data_wait_fraction"))
    w = torch.load(run / "pretrain_model.pth", weights_only=True)["da.weight"]  # Dynamic Alignment's W
    assert w.shape == (int(cfg.align.top_k), 6)  # top-5 teacher levels x the demo student's 6 blocks
    img = acc.Images("alignment/W")[0]
    assert (img.height, img.width) == (w.shape[0] * 12, w.shape[1] * 12)


@pytest.mark.slow
def test_classification_job_writes_tensorboard(tmp_path: Path, full_demo_imagenet: Path) -> None:
    from maskalign.checkpoint import export_encoder
    from maskalign.config import config_dir, load_config
    from maskalign.transfer.classifier import build_classifier

    torch.manual_seed(0)
    model = build_classifier(TINY_ARCH, 0, kind="finetune", global_pool="token")
    enc = export_encoder(tmp_path / "enc", {k: v for k, v in model.state_dict().items() if not k.startswith("head")},
                         {"arch": TINY_ARCH, "method": "mae", "run": "tiny", "pt_epochs": 1})
    root = mini_imagenet(full_demo_imagenet, tmp_path / "mini", train=4, val=2)
    cfg = load_config(None, [f"output_dir={tmp_path}", f"data.root={root}", "name=tb", "data.num_workers=0",
                             "optim.total_batch_size=8", "optim.epochs=1"],
                      config_dir("finetune"))
    run_task("finetune", OmegaConf.create(OmegaConf.to_container(cfg)), enc)
    acc = _events(tmp_path / "finetune" / "tb" / "tensorboard")
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/images_per_s", "epoch/val_top1", "epoch/train_loss"} <= tags, tags
    log = json.loads((tmp_path / "finetune" / "tb" / "log.jsonl").read_text().splitlines()[0])
    (_, top1), = _series(acc, "epoch/val_top1")
    assert top1 == pytest.approx(log["val_top1"])


def test_wandb_mirrors_the_scalars_when_asked(tmp_path: Path, monkeypatch) -> None:
    """With a stand-in ``wandb`` module: the run is initialised from the run folder's config and
    receives the same points as TensorBoard."""
    import sys
    import types

    calls: dict[str, list] = {"init": [], "log": [], "finish": []}

    class Run:
        def log(self, data, step=None):
            calls["log"].append((data, step))

        def finish(self):
            calls["finish"].append(True)

    fake = types.ModuleType("wandb")
    fake.init = lambda **kw: calls["init"].append(kw) or Run()
    fake.Image = lambda arr: ("image", arr.shape)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    (tmp_path / "config.yaml").write_text("seed: 3\nlogging:\n  wandb: true\n  wandb_project: lab\n")
    mon = TrainMonitor(tmp_path, is_main=True, device=torch.device("cpu"), log_every=1)
    for it, _ in enumerate(mon.timed(range(2))):
        mon.iteration(it, it + 1, torch.tensor(0.5), {"align_loss": torch.tensor(0.25)}, 1e-3, 4)
    mon.close()
    (init,) = calls["init"]
    assert init["project"] == "lab" and init["name"] == tmp_path.name and init["config"]["seed"] == 3
    assert init["resume"] == "allow"
    assert [step for _, step in calls["log"]] == [1, 2]
    assert calls["log"][0][0]["train/loss"] == 0.5 and calls["log"][0][0]["train/align_loss"] == 0.25
    assert calls["finish"] == [True]
    assert _series(_events(tmp_path / "tensorboard"), "train/loss") == [(1, 0.5), (2, 0.5)]
