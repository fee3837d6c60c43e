"""Live view of a run: TensorBoard event files in the run folder, and W&B when asked for.

``Monitor`` is the writer (``scalar``, ``scalars``, ``image``, ``close``) through
``torch.utils.tensorboard``; it writes into ``<run folder>/tensorboard/`` and is a no-op on every
rank but the first. W&B mirrors it when the run's config says ``logging.wandb: true`` (off by
default; ``wandb`` is imported only then, and its absence is one line). ``TrainMonitor`` is what
the training loops call, a line at a time: it times the wait for the data loader, and every
``log_every`` iterations logs the loss and the objective's metrics (e.g. the alignment loss per
level), the lr, images/s, the fraction of wall time spent waiting for data and, on CUDA, GPU
memory; at epoch ends the epoch's means and, every ``image_every`` epochs, the Dynamic Alignment
matrix W (``maskalign.alignment.DynamicAlignment.weight``) as an image.

detectron2's and mmsegmentation's own TensorBoard writers are pointed at the same folder of their
run (``detectron2_writer``, ``mmseg_tensorboard``), so ``tensorboard --logdir output`` shows every
job of a study.

The logging settings are read from the run folder's resolved ``config.yaml`` (``logging:``
section; every job writes one before training), so the loops need no extra argument.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from maskalign.errors import UserError

__all__ = [
    "TB_DIR",
    "Monitor",
    "TrainMonitor",
    "alignment_matrix",
    "detectron2_writer",
    "matrix_image",
    "mmseg_tensorboard",
]

TB_DIR = "tensorboard"
DEFAULTS: dict[str, Any] = {"tensorboard": True, "wandb": False, "wandb_project": "maskalign", "image_every": 5}


def run_config(run_dir: Path) -> dict[str, Any]:
    """The run folder's resolved ``config.yaml`` as a plain dict (empty if there is none)."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        return {}
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)  # type: ignore[return-value]


def logging_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config's ``logging:`` section over the defaults."""
    return {**DEFAULTS, **dict(config.get("logging") or {})}


class Monitor:
    """TensorBoard (and optionally W&B) writer of one run; every method is a no-op when disabled.

    Args:
        run_dir: the run folder; events go to ``run_dir/tensorboard``.
        enabled: False on non-main ranks.
        tensorboard: write TensorBoard event files.
        wandb: mirror to Weights & Biases (``wandb`` must be installed).
        wandb_project: W&B project; the run is named after the run folder.
        config: logged as the W&B run's config.
        purge_step: a resumed run's step: TensorBoard hides points a killed run logged past it.
    """

    def __init__(self, run_dir: str | Path, enabled: bool = True, tensorboard: bool = True, wandb: bool = False,
                 wandb_project: str = "maskalign", config: Mapping[str, Any] | None = None,
                 purge_step: int | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.tb = None
        self.wandb = None
        if not enabled:
            return
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.run_dir / TB_DIR), purge_step=purge_step or None)
        if wandb:
            try:
                import wandb as wandb_lib
            except ImportError:
                raise UserError("logging.wandb=true needs the wandb package (pip install wandb), "
                                "which is not installed") from None
            self.wandb = wandb_lib.init(project=wandb_project, name=self.run_dir.name, dir=str(self.run_dir),
                                        config=dict(config or {}), id=_wandb_id(self.run_dir), resume="allow")

    @property
    def active(self) -> bool:
        return self.tb is not None or self.wandb is not None

    def scalar(self, tag: str, value: float | torch.Tensor, step: int) -> None:
        self.scalars({tag: value}, step)

    def scalars(self, values: Mapping[str, float | torch.Tensor], step: int, prefix: str = "") -> None:
        """One point per tag (``prefix + tag``); tensors are read back here (one host sync)."""
        if not self.active:
            return
        plain = {f"{prefix}{k}": float(v.item() if torch.is_tensor(v) else v) for k, v in values.items()}
        if self.tb is not None:
            for k, v in plain.items():
                self.tb.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(plain, step=step)

    def image(self, tag: str, img: torch.Tensor, step: int) -> None:
        """``img``: (3, H, W) or (H, W), floats in [0, 1]."""
        if not self.active:
            return
        img = img.detach().float().cpu().clamp(0, 1)
        if img.dim() == 2:
            img = img.unsqueeze(0).expand(3, -1, -1)
        if self.tb is not None:
            self.tb.add_image(tag, img, step)
        if self.wandb is not None:
            import wandb as wandb_lib

            self.wandb.log({tag: wandb_lib.Image(img.permute(1, 2, 0).numpy())}, step=step)

    def flush(self) -> None:
        if self.tb is not None:
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None


def _wandb_id(run_dir: Path) -> str:
    """A stable W&B id per run folder, so a requeued job continues its W&B run."""
    import hashlib

    return hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:16]


def alignment_matrix(model: torch.nn.Module) -> torch.Tensor | None:
    """W (teacher levels x student blocks) of the model's Dynamic Alignment, if it has a learnable one."""
    from maskalign.alignment import DynamicAlignment

    for m in model.modules():
        if isinstance(m, DynamicAlignment) and m.weight is not None:
            return m.weight.detach()
    return None


def matrix_image(w: torch.Tensor, cell: int = 12) -> torch.Tensor:
    """A matrix as a (3, rows*cell, cols*cell) viridis image, scaled to its own min..max."""
    from matplotlib import colormaps

    w = w.detach().float().cpu()
    span = (w.max() - w.min()).clamp_min(1e-12)
    rgb = colormaps["viridis"](((w - w.min()) / span).numpy())[..., :3]  # (rows, cols, 3)
    img = torch.from_numpy(rgb).float().permute(2, 0, 1)
    return img.repeat_interleave(cell, dim=1).repeat_interleave(cell, dim=2)


class _WaitClock:
    """Iterates ``loader``, adding the time spent inside ``next()`` to ``owner.wait_s``."""

    def __init__(self, loader: Iterable[Any], owner: TrainMonitor) -> None:
        self.loader, self.owner = loader, owner

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Any]:
        it = iter(self.loader)
        while True:
            t0 = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                return
            self.owner.wait_s += time.perf_counter() - t0
            yield item


class TrainMonitor:
    """The training loops' side of ``Monitor`` (module docstring).

    Args:
        run_dir: the run folder (holding the resolved ``config.yaml``).
        is_main: False on ranks other than 0: nothing is written there.
        device: where training runs (GPU memory is logged on CUDA).
        log_every: iterations between logged points.
        model: searched for the Dynamic Alignment matrix W.
        start_step: the optimizer step a resumed run starts from.
    """

    def __init__(self, run_dir: str | Path, is_main: bool, device: torch.device, log_every: int = 20,
                 model: torch.nn.Module | None = None, start_step: int = 0) -> None:
        config = run_config(Path(run_dir)) if is_main else {}
        settings = logging_settings(config)
        self.writer = Monitor(run_dir, enabled=is_main, tensorboard=bool(settings["tensorboard"]),
                              wandb=bool(settings["wandb"]), wandb_project=str(settings["wandb_project"]),
                              config=config, purge_step=start_step)
        self.device, self.log_every, self.model = device, max(int(log_every), 1), model
        self.image_every = max(int(settings["image_every"]), 1)
        self.wait_s = 0.0
        self._t0, self._images, self._wait0 = time.perf_counter(), 0, 0.0
        self._epoch_t0 = self._t0

    def timed(self, loader: Iterable[Any]) -> _WaitClock:
        """``loader``, with the time spent waiting for each batch measured."""
        self._t0, self._images, self.wait_s, self._wait0 = time.perf_counter(), 0, 0.0, 0.0
        self._epoch_t0 = self._t0
        return _WaitClock(loader, self)

    def iteration(self, it: int, step: int, loss: torch.Tensor, metrics: Mapping[str, torch.Tensor],
                  lr: float, images: int) -> None:
        """After iteration ``it`` of the epoch (``images``: this iteration's images over all ranks)."""
        self._images += images
        if not self.writer.active or (it + 1) % self.log_every:
            return
        now = time.perf_counter()
        dt = max(now - self._t0, 1e-9)
        values: dict[str, float | torch.Tensor] = {
            "loss": loss.detach().float(), **{k: v.detach().float() for k, v in metrics.items()}, "lr": lr,
            "images_per_s": self._images / dt, "data_wait_fraction": min((self.wait_s - self._wait0) / dt, 1.0)}
        if self.device.type == "cuda":
            values["gpu_mem_allocated_gb"] = torch.cuda.memory_allocated(self.device) / 2**30
            values["gpu_mem_peak_gb"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        self.writer.scalars(values, step, prefix="train/")
        self._t0, self._images, self._wait0 = now, 0, self.wait_s

    def epoch(self, epoch: int, values: Mapping[str, float], step: int | None = None) -> None:
        """After ``epoch`` epochs: their logged means (``log.jsonl``'s entry), and W now and then."""
        if not self.writer.active:
            return
        at = epoch if step is None else step
        plain = {k: v for k, v in values.items() if isinstance(v, (int, float)) and k not in ("epoch", "step")}
        plain["data_wait_fraction"] = min(self.wait_s / max(time.perf_counter() - self._epoch_t0, 1e-9), 1.0)
        self.writer.scalars(plain, at, prefix="epoch/")
        w = alignment_matrix(self.model) if self.model is not None else None
        if w is not None and (epoch % self.image_every == 0 or epoch == 1):
            self.writer.image("alignment/W", matrix_image(w), at)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def detectron2_writer(run_dir: str | Path, window_size: int = 20) -> Any:
    """detectron2's ``TensorboardXWriter`` into ``run_dir/tensorboard`` (add it to the job's writers)."""
    from detectron2.utils.events import TensorboardXWriter

    return TensorboardXWriter(str(Path(run_dir) / TB_DIR), window_size=window_size)


def mmseg_tensorboard(cfg: Any, run_dir: str | Path) -> Any:
    """Add mmengine's ``TensorboardVisBackend`` writing into ``run_dir/tensorboard`` to ``cfg.visualizer``."""
    vis = cfg.get("visualizer")
    if vis is None:
        cfg.visualizer = vis = {"type": "SegLocalVisualizer", "name": "visualizer", "vis_backends": []}
    backends = list(vis.get("vis_backends") or [])
    if not any(b.get("type") == "TensorboardVisBackend" for b in backends):
        backends.append({"type": "TensorboardVisBackend", "save_dir": str(Path(run_dir) / TB_DIR)})
    vis["vis_backends"] = backends
    return cfg
