"""A new objective added in one file, this one: registered here, trained by the real engine, and
printed in a results table under its own label, with no edit to any library file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from contract_checks import check_objective_contract, tiny_config
from objective_fixtures import export_random_teacher
from transfer_helpers import mini_imagenet, run_task

from maskalign.config import ConfigError, config_dir, load_config
from maskalign.data.transforms import pretrain_transform
from maskalign.objectives import Objective, ObjectiveOutput, build_objective, build_student, register_objective
from maskalign.objectives.pixels import pixel_targets
from maskalign.results import fmt


@register_objective("toy_linear")
class ToyLinear(Objective):
    """Each patch's pixels regressed linearly from its own token; the encoder sees every patch."""

    label = "ToyLinear"
    transform_calls = 0
    progress: list[float] = []

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.embed_dim, encoder.patch_size ** 2 * 3)

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        if cfg.teacher.backend != "none":
            raise ConfigError(f"method=toy_linear uses no teacher; set teacher.backend=none "
                              f"(it is {cfg.teacher.backend})")

    @classmethod
    def from_config(cls, cfg: Any) -> ToyLinear:
        return cls(build_student(cfg))

    def train_transform(self, cfg: Any) -> Any:
        crop = pretrain_transform(cfg.student.img_size, cfg.data.crop_scale_min)

        def counted(img: Any) -> torch.Tensor:
            ToyLinear.transform_calls += 1
            return crop(img)

        return counted

    def after_optimizer_step(self, progress: float) -> None:
        ToyLinear.progress.append(progress)

    @property
    def forward_ratio(self) -> float:
        return 1.0

    @property
    def reconstruct_ratio(self) -> float:
        return 1.0

    @property
    def supervision(self) -> str:
        return "RGB"

    def forward(self, images: torch.Tensor) -> ObjectiveOutput:
        pred = self.head(self.encoder(images)[:, 1:])
        loss = F.mse_loss(pred.float(), pixel_targets(images, self.encoder.patch_size))
        return ObjectiveOutput(loss, {"mse": loss.detach()})


def test_toy_keeps_the_contract_and_checks_its_own_keys(tmp_path: Path) -> None:
    ckpt = export_random_teacher(tmp_path, depth=3, dim=32, img=32)
    cfg = tiny_config("toy_linear", ckpt)
    check_objective_contract(build_objective(cfg), cfg)
    cfg.teacher.backend = "demo"
    with pytest.raises(ConfigError, match="^method=toy_linear uses no teacher"):
        build_objective(cfg)
    assert fmt.method_name("toy_linear") == "ToyLinear"


@pytest.mark.slow
def test_toy_trains_in_the_engine_and_lands_in_table_1(tmp_path: Path, full_demo_imagenet: Path) -> None:
    from maskalign.engine.pretrain import train
    from maskalign.results.render_all import make_tables

    out = tmp_path / "output"
    ToyLinear.transform_calls, ToyLinear.progress = 0, []
    cfg = load_config(None, [f"output_dir={out}", "name=toy", "method=toy_linear", "teacher.backend=none",
                             "mask.type=random", "optim.epochs=1", "runtime.max_steps=2",
                             "optim.total_batch_size=8", "data.num_workers=0"], config_dir("pretrain"))
    summary = train(cfg)
    assert torch.isfinite(torch.tensor(summary["final_loss"]))
    # the engine called the toy's declared hooks: its transform for each image, its step hook
    # with the run's progress at the data iteration of each step (0 and 1 of len(train) // 8),
    # the index LUT's official EMA schedule uses
    n_train = sum(1 for p in (full_demo_imagenet / "train").rglob("*.JPEG"))
    assert ToyLinear.transform_calls >= 16
    assert ToyLinear.progress == pytest.approx([0 / (n_train // 8), 1 / (n_train // 8)])

    mini = mini_imagenet(full_demo_imagenet, tmp_path / "mini" / "imagenet")
    ft = load_config(None, [f"output_dir={out}", f"data.root={mini}", "name=toy-ft", "data.num_workers=0",
                            "optim.epochs=1", "runtime.max_steps=2", "optim.total_batch_size=8",
                            "model.drop_path=0.0"], config_dir("finetune"))
    run_task("finetune", ft, summary["encoder"])

    tables = make_tables(out, tmp_path / "tables")
    t1 = tables.tables["table1"].frame
    rows = t1[t1.apply(lambda r: "ToyLinear" in r.astype(str).tolist(), axis=1)]
    assert len(rows) == 1, t1.to_string()
    row = rows.iloc[0].astype(str).tolist()
    assert "100%" in row  # its own forward ratio, from its own declaration
