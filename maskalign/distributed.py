"""Process-group setup from torchrun's or SLURM's environment; a single process needs neither.

Under SLURM (one task per GPU, as submitit launches) rank, local rank and world size come from
``SLURM_PROCID``/``SLURM_LOCALID``/``SLURM_NTASKS`` and the master is the first host of the job's
node list; under torchrun from ``RANK``/``LOCAL_RANK``/``WORLD_SIZE``. NCCL on GPUs, gloo on CPUs.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def first_host(nodelist: str) -> str:
    """First host of a SLURM node list such as ``gpu[012-015,020],cpu1`` -> ``gpu012``."""
    m = re.match(r"([^,\[]+)(\[([^\]]+)\])?", nodelist.strip())
    if not m:
        raise ValueError(f"cannot parse SLURM node list {nodelist!r}")
    prefix, ranges = m.group(1), m.group(3)
    if not ranges:
        return prefix
    first = ranges.split(",")[0].split("-")[0]
    return prefix + first


def _env_int(*names: str) -> int | None:
    for n in names:
        if os.environ.get(n, "").strip().isdigit():
            return int(os.environ[n])
    return None


def resolve_device(pref: str) -> torch.device:
    if pref == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("runtime.device=cuda but no CUDA device is visible")
    if pref in ("cuda", "auto") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def init_distributed(device_pref: str = "auto") -> DistInfo:
    world = _env_int("WORLD_SIZE")
    if world is not None:
        rank, local = _env_int("RANK") or 0, _env_int("LOCAL_RANK") or 0
    elif (_env_int("SLURM_NTASKS") or 1) > 1 and "SLURM_PROCID" in os.environ:
        world, rank, local = _env_int("SLURM_NTASKS"), _env_int("SLURM_PROCID"), _env_int("SLURM_LOCALID") or 0
        os.environ.setdefault("MASTER_ADDR", first_host(os.environ.get("SLURM_JOB_NODELIST", "127.0.0.1")))
        # A port derived from the job id, so that two jobs sharing a node do not collide.
        os.environ.setdefault("MASTER_PORT", str(20000 + (_env_int("SLURM_JOB_ID") or 0) % 20000))
    else:
        world, rank, local = 1, 0, 0
    device = resolve_device(device_pref)
    if device.type == "cuda":
        device = torch.device("cuda", local % torch.cuda.device_count())
        torch.cuda.set_device(device)
    info = DistInfo(rank=rank, local_rank=local, world_size=world, device=device)
    if world > 1 and not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29500")
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world)
    return info


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        t = t.clone()
        dist.all_reduce(t)
        t /= dist.get_world_size()
    return t


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
