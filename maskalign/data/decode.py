"""``data.decode: cpu | gpu | auto``: where training images are decoded and augmented.

* ``cpu``: DataLoader workers decode with PIL and augment (the recipe's torchvision/timm transform).
* ``gpu``: workers only read the files' bytes (``JpegFolder``); the main process decodes the batch on
  the device with nvJPEG and crops, resizes, flips and normalises it there (``GpuAugment``), with
  the same augmentation distribution. Without CUDA it says so in one line and runs the CPU path.
  A recipe whose augmentation has no device version (RandAugment works on PIL images; LUT's
  two-view transform) is refused in one line.
* ``auto``: the CPU path, unless on CUDA the CPU path would starve the step. Pre-training measures
  it at start: the CPU pipeline's images/s on a few images times the worker count, against the
  step's images/s on a synthetic batch (a few forward+backward passes, RNG and buffers restored,
  gradients cleared: the run itself is unchanged); the decision and both rates are logged. The
  classification jobs have no model at loader-building time: on CUDA they pick the device path
  whenever their recipe runs there (a ViT-B fine-tuning step costs about as many FLOPs per image as
  MaskAlign's, whose rate the CPU path of one node does not reach: bench/README.md).

Both paths draw each image's augmentation from a per-image seed (``maskalign.data.keyed``), so the
same image in the same epoch gets the same crop and flip on either path, any worker count and any
world size.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from maskalign.config import ConfigError
from maskalign.data.keyed import EpochKeys, KeyedDataset
from maskalign.teachers.base import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["DECODE_MODES", "DeviceAugmentLoader", "DeviceRecipe", "build_loader", "cpu_images_per_s",
           "resolve_decode", "starves", "step_images_per_s"]

DECODE_MODES = ("cpu", "gpu", "auto")
# auto picks the device path when the CPU path delivers less than this multiple of the step's rate
# (headroom for the page cache missing, a slower file system, neighbours on the node).
AUTO_HEADROOM = 1.2


@dataclass(frozen=True)
class DeviceRecipe:
    """The augmentation the device path reproduces: RandomResizedCrop(img_size, scale=(scale_min, 1),
    bicubic) + horizontal flip + normalisation (ImageNet's unless the encoder says otherwise), then timm's
    random erasing if ``reprob``."""

    img_size: int
    scale_min: float
    reprob: float = 0.0
    remode: str = "pixel"
    recount: int = 1
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD


def resolve_decode(mode: str, device: torch.device, recipe: DeviceRecipe | None, why_not: str = "",
                   *, measure: Callable[[], tuple[float, float]] | None = None,
                   log: Callable[[str], None] = print) -> str:
    """``"cpu"`` or ``"gpu"`` for ``data.decode=mode`` on ``device``.

    Args:
        recipe: the device version of the job's augmentation; ``None`` if it has none (``why_not``).
        measure: ``() -> (cpu images/s, step images/s)`` for ``auto`` on CUDA; without it ``auto``
            takes the device path whenever it can.
    """
    if mode not in DECODE_MODES:
        raise ConfigError(f"data.decode: unknown {mode!r}; use cpu, gpu or auto")
    if mode == "cpu":
        return "cpu"
    if device.type != "cuda":
        if mode == "gpu":
            log("[data] data.decode=gpu: no CUDA device here, decoding on the CPU instead")
        return "cpu"
    if recipe is None:
        if mode == "gpu":
            raise ConfigError(f"data.decode=gpu: {why_not}; use data.decode=cpu")
        log(f"[data] data.decode=auto: cpu ({why_not})")
        return "cpu"
    if mode == "gpu":
        return "gpu"
    if measure is None:
        log("[data] data.decode=auto: gpu (CUDA, and the recipe's augmentation runs on the device)")
        return "gpu"
    cpu_rate, step_rate = measure()
    choice = "gpu" if starves(cpu_rate, step_rate) else "cpu"
    log(f"[data] data.decode=auto: {choice} (CPU path {cpu_rate:.0f} images/s with its workers, "
        f"step {step_rate:.0f} images/s)")
    return choice


def starves(cpu_images_per_s: float, step_images_per_s: float, headroom: float = AUTO_HEADROOM) -> bool:
    """True when the CPU path cannot keep ``headroom`` times ahead of the step."""
    return cpu_images_per_s < headroom * step_images_per_s


def cpu_images_per_s(dataset: Dataset, workers: int, n: int = 16, seed: int = 0) -> float:
    """The CPU path's rate: ``n`` images decoded and augmented here, one core, times the workers
    (each worker is one process on its own core; with 0 workers the main process does it)."""
    keyed = dataset if isinstance(dataset, KeyedDataset) else KeyedDataset(dataset, seed)
    n = min(n, len(keyed))
    stride = max(len(keyed) // max(n, 1), 1)
    t0 = time.perf_counter()
    for i in range(n):
        keyed[(0, i * stride)]
    dt = time.perf_counter() - t0
    return n / max(dt, 1e-9) * max(workers, 1)


def step_images_per_s(model: torch.nn.Module, batch: int, img_size: int, device: torch.device,
                      autocast: Callable[[], Any], iters: int = 3) -> float:
    """Images/s of ``iters`` forward+backward passes of ``model`` on a random batch (after one
    warm-up), leaving the run as it was: RNG states and buffers restored, gradients cleared."""
    names = {k for k, _ in model.named_buffers()}
    buffers = {k: v.detach().clone() for k, v in model.state_dict().items() if k in names}
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        x = torch.randn(batch, 3, img_size, img_size, device=device)
        t0 = 0.0
        for i in range(iters + 1):
            if i == 1:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                t0 = time.perf_counter()
            with autocast():
                out = model(x)
            loss = out.loss if hasattr(out, "loss") else out.float().mean()
            loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        dt = time.perf_counter() - t0
    model.zero_grad(set_to_none=True)
    model.load_state_dict(buffers, strict=False)
    return batch * iters / max(dt, 1e-9)


class DeviceAugmentLoader:
    """Batches of encoded files -> ``(augmented images on the device, labels)``.

    Iterates a DataLoader over ``KeyedDataset(JpegFolder, seed, with_seed=True)`` and augments each
    batch with ``GpuAugment`` from the images' own seeds (then timm's random erasing, if the recipe
    has it); looks like the loader it wraps (``len``, ``batch_size``, ``sampler``, ``dataset``).
    """

    def __init__(self, loader: DataLoader, recipe: DeviceRecipe, device: torch.device) -> None:
        from maskalign.data.gpu_decode import GpuAugment

        self.loader, self.recipe, self.device = loader, recipe, device
        self.batch_size, self.sampler, self.dataset = loader.batch_size, loader.sampler, loader.dataset
        self.augment = GpuAugment(recipe.img_size, scale=(recipe.scale_min, 1.0), device=device,
                                  uint8_resize=device.type == "cpu", mean=recipe.mean, std=recipe.std)
        self.erase = None
        if recipe.reprob > 0:
            from timm.data.random_erasing import RandomErasing

            self.erase = RandomErasing(recipe.reprob, mode=recipe.remode, max_count=recipe.recount,
                                       device=str(device))

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        samples = self.loader.dataset.samples
        for data, labels, seeds, indices in self.loader:
            names = [samples[i][0] for i in indices.tolist()]
            x = self.augment(data, seeds=seeds, names=names)
            if self.erase is not None:
                x = self.erase(x)
            yield x, labels


def build_loader(dataset: Dataset, per_proc_batch: int, rank: int, world: int, seed: int, num_workers: int,
                 device: torch.device, decode: str, recipe: DeviceRecipe | None = None,
                 persistent_workers: bool = False,
                 worker_init_fn: Callable[[int], None] | None = None) -> tuple[Any, EpochKeys]:
    """The shuffled, ``drop_last`` training loader of either path, and its sampler (``set_epoch``).

    ``dataset`` is the CPU path's ``ImageFolder`` (with its transform); the device path reads the
    same files in the same order. ``decode`` is ``resolve_decode``'s answer.
    """
    shard = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True)
    sampler = EpochKeys(shard)
    common: dict[str, Any] = {"batch_size": per_proc_batch, "sampler": sampler, "num_workers": num_workers,
                              "drop_last": True, "pin_memory": device.type == "cuda",
                              "persistent_workers": persistent_workers and num_workers > 0,
                              "worker_init_fn": worker_init_fn,
                              # The loader's own generator: making an epoch's iterator must not draw
                              # from the global RNG, whose state a mid-epoch checkpoint restores
                              # *after* that iterator was made.
                              "generator": torch.Generator().manual_seed(seed)}
    if decode == "gpu":
        from maskalign.data.gpu_decode import JpegFolder, collate_keyed_bytes

        if recipe is None:
            raise ValueError("the device path needs the recipe it reproduces")
        files = KeyedDataset(JpegFolder.like(dataset), seed, with_seed=True)
        common["pin_memory"] = False  # nvJPEG reads host bytes; pinning a byte blob buys nothing
        return DeviceAugmentLoader(DataLoader(files, collate_fn=collate_keyed_bytes, **common), recipe, device), sampler
    return DataLoader(KeyedDataset(dataset, seed), **common), sampler


def pretrain_loader(cfg: Any, objective: torch.nn.Module, dataset: Dataset, info: Any, per_proc_batch: int,
                    autocast: Callable[[], Any]) -> tuple[Any, EpochKeys]:
    """The pre-training loader for ``cfg.data.decode`` (the engine's one call; ``info``: DistInfo)."""
    from maskalign.runfolder.preempt import quiet_worker

    own = objective.train_transform(cfg)
    recipe = None if own is not None else DeviceRecipe(int(cfg.student.img_size), float(cfg.data.crop_scale_min))
    workers = int(cfg.data.num_workers)

    def measure() -> tuple[float, float]:
        return (cpu_images_per_s(dataset, workers, seed=int(cfg.seed)),
                step_images_per_s(objective, per_proc_batch, int(cfg.student.img_size), info.device, autocast))

    log = print if info.is_main else (lambda _msg: None)
    decode = resolve_decode(str(cfg.data.get("decode", "auto")), info.device, recipe,
                            f"method={cfg.method} augments with its own transform", measure=measure, log=log)
    if info.world_size > 1:  # auto measures on every rank; all follow rank 0's answer
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            choice = [decode]
            dist.broadcast_object_list(choice, src=0)
            decode = choice[0]
    return build_loader(dataset, per_proc_batch, info.rank, info.world_size, int(cfg.seed), workers,
                        info.device, decode, recipe, worker_init_fn=quiet_worker)
