"""The frozen-feature protocols as tasks: DINO's weighted k-NN and the attentive probe (AIM / V-JEPA).

Each is a :class:`~maskalign.transfer.tasks.YamlConfigTask`: its recipe is
``maskalign/configs/<task>/default.yaml`` <- ``--config NAME`` <- ``key=value``, resolved before
launch; the job runs ``maskalign.transfer.<task>.run(ctx)``. (DINOv2's multi-head linear
probe is a protocol of ``linprobe``: ``--config dinov2_grid``.) Each task declares its own table.
"""

from __future__ import annotations

from typing import Any, ClassVar

from maskalign.config import config_dir
from maskalign.metric_names import Metric
from maskalign.tasks.context import RunContext
from maskalign.tasks.registry import register_task
from maskalign.transfer.tasks import YamlConfigTask

KNN_KS = (10, 20, 100, 200)
_ROW = ("Method", "Backbone", "Supervision", "Epochs")


def _table(name: str, title: str, task: str, cols: tuple[tuple[str, str], ...]) -> Any:
    """A table of ``task``'s records (rows keyed like Table 1's) of ``(column, metric)`` values; pandas loads late."""
    from maskalign.results.tables import Spec

    return Spec.of_task(name, title, task, cols, settings=_ROW, ref="1")


@register_task
class KnnTask(YamlConfigTask):
    name = "knn"
    description = "Weighted k-NN (DINO) on a frozen encoder's [CLS] features: k = 10, 20, 100, 200, T = 0.07"
    config_dir = config_dir("knn")
    metrics: ClassVar[tuple[str, ...]] = (Metric.TOP1, Metric.TOP5, *(f"knn{k}_top1" for k in KNN_KS))
    rerun_keys = ("knn",)  # another k, temperature or chunking reuses the run's cached features

    def run(self, ctx: RunContext) -> dict[str, Any]:
        from maskalign.transfer.knn import run

        return run(ctx)

    def tables(self) -> tuple[Any, ...]:
        return (_table("knn", "Weighted k-NN on frozen features (val top-1, %; T = 0.07)", self.name,
                       tuple((f"k={k}", f"knn{k}_top1") for k in KNN_KS) + (("k=20 top-5", "knn20_top5"),)),)


@register_task
class AttentiveTask(YamlConfigTask):
    name = "attentive"
    description = "Attentive probing (V-JEPA / AIM): a learned query cross-attends to frozen patch tokens, then linear"
    config_dir = config_dir("attentive")
    metrics: ClassVar[tuple[str, ...]] = (Metric.TOP1, Metric.TOP5, Metric.BEST_TOP1, Metric.BEST_EPOCH)

    def run(self, ctx: RunContext) -> dict[str, Any]:
        from maskalign.transfer.attentive import run

        return run(ctx)

    def tables(self) -> tuple[Any, ...]:
        return (_table("attentive", "Attentive probing on frozen patch tokens (val, %)", self.name,
                       (("Top-1", Metric.TOP1), ("Top-5", Metric.TOP5), ("Best top-1", Metric.BEST_TOP1))),)


__all__ = ["AttentiveTask", "KnnTask"]
