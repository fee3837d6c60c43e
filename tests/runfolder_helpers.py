"""Shared pieces of the run-folder tests: a tiny ImageNet-layout data set, small mounts, fake SLURM tools."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SUBMIT = str(REPO / "pretrain" / "submit.py")


def tiny_imagenet(root: Path, per_class: int = 4) -> Path:
    """``per_class`` images of each demo class, as an ImageNet ``train/`` folder (symlinks)."""
    from maskalign.data.demo_world import ensure_imagenet

    src = ensure_imagenet() / "train"
    for cls in sorted(p for p in src.iterdir() if p.is_dir()):
        dst = root / "train" / cls.name
        dst.mkdir(parents=True, exist_ok=True)
        for img in sorted(cls.iterdir())[:per_class]:
            (dst / img.name).symlink_to(img)
    return root


def tiny_run_args(data_root: Path, output_dir: Path, name: str, *extra: str) -> list[str]:
    """Overrides of a run that takes seconds on a CPU: 40 images, batch 4, 10 iterations per epoch."""
    return ["data.dataset=imagenet", f"data.root={data_root}", "optim.total_batch_size=4", "optim.epochs=2",
            "optim.warmup_epochs=1", f"output_dir={output_dir}", f"name={name}", *extra]


def hold_at(points: str, ready: Path) -> dict[str, str]:
    """A job's environment holding it at named steps (``EPOCH:ITERATION`` or ``start``, comma-separated)
    until a signal comes; at each it writes ``ready`` (``maskalign.runfolder.faults``). Signals then
    land where the test says, never by timing."""
    n = len(points.split(","))
    return {"MASKALIGN_FAULT_AT": points, "MASKALIGN_FAULT": ",".join(["hold"] * n),
            "MASKALIGN_FAULT_READY": str(ready)}


def run_submit(*argv: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, SUBMIT, *argv], capture_output=True, text=True, timeout=timeout,
                          env=env, check=False)


def mount_tmpfs(where: Path, size: str, read_only: bool = False) -> str | None:
    """Mount a small tmpfs at ``where``; returns why it could not be done, or ``None``."""
    where.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        return "no mount command"
    opts = f"size={size}" + (",ro" if read_only else "")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], capture_output=True,
                         text=True, check=False)
    if res.returncode != 0:
        return f"cannot mount a tmpfs here ({res.stderr.strip() or 'not permitted'})"
    return None


def umount(where: Path) -> None:
    subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


def fake_slurm(bin_dir: Path, sinfo_rc: int = 1, log: Path | None = None) -> dict[str, str]:
    """A PATH whose ``sbatch``/``sinfo``/``squeue`` fail like tools without an answering controller."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for tool in ("sbatch", "sinfo", "squeue", "scontrol"):
        p = bin_dir / tool
        record = f'echo "{tool} $*" >> {log}\n' if log else ""
        p.write_text(f"#!/bin/sh\n{record}echo 'slurm_load_partitions: Unable to contact slurm controller "
                     f"(connect failure)' >&2\nexit {sinfo_rc}\n")
        p.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
