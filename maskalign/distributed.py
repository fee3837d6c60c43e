"""Process-group setup from torchrun's or SLURM's environment; a single process needs neither.

Under SLURM (one task per GPU, or one per node without GPUs, as the launcher submits them) rank,
local rank and world size come from ``SLURM_PROCID``/``SLURM_LOCALID``/``SLURM_STEP_NUM_TASKS``
(the srun step's tasks) and the master is the first host of the job's node list, on a port
derived from the job id; under torchrun from ``RANK``/``LOCAL_RANK``/``WORLD_SIZE``. NCCL on GPUs,
gloo on CPUs. :func:`resolve_device` is the one place a config's device setting is read.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from maskalign.errors import UserError

if TYPE_CHECKING:  # torch is imported where it is used: reading the environment must stay light
    import torch

MASTER_PORT_BASE = 20000
MASTER_PORT_SPAN = 20000


def _torch():
    import torch

    return torch


@dataclass
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: _torch().device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside ``[...]``."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced ']' in SLURM node list {text!r}")
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth:
        raise ValueError(f"unbalanced '[' in SLURM node list {text!r}")
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def _expand_range(item: str) -> list[str]:
    if "-" not in item:
        return [item]
    lo, hi = item.split("-", 1)
    if not (lo.isdigit() and hi.isdigit()) or int(hi) < int(lo):
        raise ValueError(f"bad range {item!r} in SLURM node list")
    width = len(lo)  # zero padding is kept: 012-015 -> 012, 013, 014, 015
    return [str(i).zfill(width) for i in range(int(lo), int(hi) + 1)]


def _expand_host(pattern: str) -> list[str]:
    m = re.search(r"\[([^\[\]]*)\]", pattern)
    if not m:
        if "[" in pattern or "]" in pattern:
            raise ValueError(f"cannot parse SLURM node list entry {pattern!r}")
        return [pattern]
    head, tail = pattern[:m.start()], pattern[m.end():]
    values = [v for part in m.group(1).split(",") if part.strip() for v in _expand_range(part.strip())]
    if not values:
        raise ValueError(f"empty brackets in SLURM node list entry {pattern!r}")
    return [head + v + rest for v in values for rest in _expand_host(tail)]


def expand_nodelist(nodelist: str) -> list[str]:
    """All hosts of a SLURM node list: ``gpu[012-013,020],cpu1`` -> gpu012, gpu013, gpu020, cpu1.

    Handles zero padding, several bracket groups per name (``r[1-2]n[1-2]``) and names without
    brackets; raises ``ValueError`` on anything else.
    """
    hosts = [h for part in _split_top_level(nodelist) for h in _expand_host(part)]
    if not hosts:
        raise ValueError(f"empty SLURM node list {nodelist!r}")
    return hosts


def first_host(nodelist: str) -> str:
    """First host of a SLURM node list such as ``gpu[012-015,020],cpu1`` -> ``gpu012``."""
    return expand_nodelist(nodelist)[0]


def master_port(job_id: int | str | None) -> int:
    """A port derived from the job id, so that two jobs sharing a node do not collide."""
    digits = re.sub(r"\D", "", str(job_id or ""))
    return MASTER_PORT_BASE + (int(digits) if digits else 0) % MASTER_PORT_SPAN


def _int(env: Mapping[str, str], *names: str) -> int | None:
    for n in names:
        v = env.get(n, "").strip()
        if v.isdigit():
            return int(v)
    return None


@dataclass(frozen=True)
class ProcessEnv:
    """Where this process sits in its job, as torchrun would describe it."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    source: str = "single"  # single | torchrun | slurm

    def torchrun_vars(self) -> dict[str, str]:
        return {"RANK": str(self.rank), "LOCAL_RANK": str(self.local_rank), "WORLD_SIZE": str(self.world_size),
                "MASTER_ADDR": self.master_addr, "MASTER_PORT": str(self.master_port)}


def process_env(env: Mapping[str, str] | None = None) -> ProcessEnv:
    """Read rank, local rank, world size and master from torchrun's variables, else SLURM's.

    SLURM's world is the task count of the job step that srun started (``SLURM_STEP_NUM_TASKS``);
    the batch script itself (which has ``SLURM_PROCID=0`` and the job's ``SLURM_NTASKS``) and a
    shell inside an allocation are single processes.
    """
    env = os.environ if env is None else env
    world = _int(env, "WORLD_SIZE")
    if world is not None:
        return ProcessEnv(rank=_int(env, "RANK") or 0, local_rank=_int(env, "LOCAL_RANK") or 0, world_size=world,
                          master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
                          master_port=_int(env, "MASTER_PORT") or 29500, source="torchrun")
    slurm_world = _int(env, "SLURM_STEP_NUM_TASKS")
    if slurm_world is not None and "SLURM_PROCID" in env:
        nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or "127.0.0.1"
        return ProcessEnv(rank=_int(env, "SLURM_PROCID") or 0, local_rank=_int(env, "SLURM_LOCALID") or 0,
                          world_size=slurm_world, master_addr=env.get("MASTER_ADDR") or first_host(nodes),
                          master_port=_int(env, "MASTER_PORT") or master_port(env.get("SLURM_JOB_ID")),
                          source="slurm")
    return ProcessEnv()


def export_torchrun_env(pe: ProcessEnv | None = None) -> ProcessEnv:
    """Set ``RANK``/``LOCAL_RANK``/``WORLD_SIZE``/``MASTER_*`` for code (and child processes)
    that read torchrun's variables; a no-op for a single process."""
    pe = pe or process_env()
    if pe.world_size > 1:
        os.environ.update(pe.torchrun_vars())
    return pe


def resolve_device(pref: str | None = "auto", key: str = "runtime.device") -> torch.device:
    """The device a config asks for: ``auto`` (CUDA when visible, else the CPU), ``cpu``, ``cuda``
    or ``cuda:N``. Asking for CUDA where none is visible, or for anything else, is refused in one
    line naming the config ``key`` (every job's device setting goes through here)."""
    torch = _torch()
    pref = str(pref or "auto")
    if pref == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not re.fullmatch(r"cpu|cuda(:\d+)?", pref):
        raise UserError(f"{key}: unknown device {pref!r}; use auto, cpu, cuda or cuda:N")
    if pref.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"{key}={pref} but no CUDA device is visible; add {key}=cpu to run on the CPU")
    return torch.device(pref)


def init_distributed(device_pref: str = "auto") -> DistInfo:
    """Join the job's process group (NCCL on GPUs, gloo on CPUs); a single process joins none."""
    torch = _torch()
    import torch.distributed as dist

    pe = process_env()
    device = resolve_device(device_pref)
    if device.type == "cuda":
        device = torch.device("cuda", pe.local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    info = DistInfo(rank=pe.rank, local_rank=pe.local_rank, world_size=pe.world_size, device=device)
    if pe.world_size > 1 and not dist.is_initialized():
        export_torchrun_env(pe)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=pe.rank,
                                world_size=pe.world_size)
    return info


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        t = t.clone()
        dist.all_reduce(t)
        t /= dist.get_world_size()
    return t


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
