"""Build a demo-world copy once, atomically, even when many processes ask for it at the same time.

Several jobs (a pre-training run and its launcher, parallel fine-tunes, pytest workers) may call
``ensure_*`` on one root together. The copy is built in a temporary sibling directory under an
exclusive ``fcntl`` lock and renamed into place; a ``_COMPLETE.json`` marker, written last, records
what was built. A caller whose marker matches returns without touching the lock, so a finished copy
costs one small file read.
"""

from __future__ import annotations

import fcntl
import json
import multiprocessing
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from maskalign.atomic import atomic_write_text

from .paths import resolve_root

# Bump whenever rendering or a layout changes, so copies made by older code are rebuilt.
GENERATOR_VERSION = 1
MARKER = "_COMPLETE.json"
JPEG_QUALITY = 92


@dataclass(frozen=True)
class DemoWorldSpec:
    """What one copy was built from; equal specs give byte-identical copies (under the same NumPy
    and Pillow, whose random streams and JPEG encoder fix the bytes).

    ``counts`` holds the layout's size arguments by name, e.g.
    ``(("train_per_class", 120), ("val_per_class", 30))``, so the marker reads on its own.
    """

    layout: str
    image_size: int
    seed: int
    counts: tuple[tuple[str, int], ...]
    version: int = GENERATOR_VERSION

    def as_dict(self) -> dict[str, Any]:
        return {
            "layout": self.layout,
            "image_size": int(self.image_size),
            "seed": int(self.seed),
            "counts": {k: int(v) for k, v in self.counts},
            "version": int(self.version),
        }

    def count(self, name: str) -> int:
        return dict(self.counts)[name]


def _read_marker(target: Path) -> Any:
    try:
        return json.loads((target / MARKER).read_text())
    except (OSError, ValueError):
        return None


def is_complete(target: Path, spec: DemoWorldSpec) -> bool:
    return _read_marker(target) == spec.as_dict()


def _check_replaceable(target: Path, spec: DemoWorldSpec) -> None:
    """Refuse to replace a folder the demo world did not make, e.g. a real dataset under that root.

    Builds are renamed into place whole, so a copy of ours always carries its marker.
    """
    if not target.exists() and not target.is_symlink():
        return
    marker = _read_marker(target)
    ours = isinstance(marker, dict) and marker.get("layout") == spec.layout
    if not ours and not (target.is_dir() and not any(target.iterdir())):
        raise FileExistsError(
            f"{target} exists but is no demo-world copy (no {MARKER}); refusing to replace it. "
            "Point the root elsewhere, or delete it yourself."
        )


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the lock


def ensure_built(target: str | os.PathLike, spec: DemoWorldSpec, build: Callable[[Path], None]) -> Path:
    """Return ``target`` holding a complete copy of ``spec``, calling ``build(tmp_dir)`` if needed.

    ``build`` fills an empty directory; it is then renamed over ``target``. A demo-world copy with
    another spec is replaced; anything else there raises ``FileExistsError``. A process that reads
    the old copy while it is being replaced may see files
    vanish -- rebuilding under running jobs is a user error this cannot make safe.
    """
    target = Path(target)
    if is_complete(target, spec):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(target.parent / f".{target.name}.lock"):
        if is_complete(target, spec):  # another process finished it while we waited
            return target
        # Holding the lock, no other builder is alive here: leftovers are from crashed builds.
        for stale in target.parent.glob(f".{target.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        _check_replaceable(target, spec)
        tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
        tmp.mkdir()
        try:
            build(tmp)
            atomic_write_text(tmp / MARKER, json.dumps(spec.as_dict(), indent=1, sort_keys=True) + "\n")
            if target.exists() or target.is_symlink():
                old = target.parent / f".{target.name}.tmp-old-{os.getpid()}"
                os.rename(target, old)
                os.rename(tmp, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def ensure_layout(root: str | os.PathLike | None, folder: str, layout: str, image_size: int, seed: int,
                  counts: tuple[tuple[str, int], ...], build: Callable[[DemoWorldSpec, Path], None]) -> Path:
    """``<root>/<folder>`` holding the copy of ``layout`` that ``image_size``, ``seed`` and ``counts``
    describe, made by ``build(spec, tmp_dir)`` when it is not there yet (see :func:`ensure_built`)."""
    spec = DemoWorldSpec(layout, image_size, seed, counts)
    return ensure_built(resolve_root(root) / folder, spec, partial(build, spec))


T = TypeVar("T")
R = TypeVar("R")


def _worker_count(n_tasks: int) -> int:
    env = os.environ.get("MASKALIGN_DEMO_WORKERS")
    if env is not None:
        return max(1, int(env))
    # Pool start-up costs more than a few hundred small images take to render.
    if n_tasks < 128 or multiprocessing.current_process().daemon:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, 8))


def _build_timeout() -> float:
    return float(os.environ.get("MASKALIGN_DEMO_TIMEOUT", "3600"))


class DemoBuildTimeout(RuntimeError):
    """The demo world's workers did not finish in ``MASKALIGN_DEMO_TIMEOUT`` seconds."""


def parallel_map(fn: Callable[[T], R], tasks: Sequence[T]) -> list[R]:
    """``[fn(t) for t in tasks]``, in order, over worker processes when that pays off.

    Every task seeds its own generator, so the result does not depend on the number of workers.
    Workers start from a fresh interpreter (``forkserver``), never forked from a job whose torch
    has started threads and whose signal handlers only set a flag: they keep the default actions,
    so ``terminate()`` (on leaving the ``with``, after an error or a stop signal) ends them. The
    wait for them is bounded by ``MASKALIGN_DEMO_TIMEOUT`` seconds (default an hour).
    """
    workers = _worker_count(len(tasks))
    if workers <= 1:
        return [fn(t) for t in tasks]
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        # Workers import what the task names; never the job's own script again (a script without
        # a __main__ guard would start the whole job once more in the server).
        ctx.set_forkserver_preload([])
    else:
        ctx = multiprocessing.get_context("spawn")
    timeout = _build_timeout()
    with ctx.Pool(workers) as pool:
        pending = pool.map_async(fn, tasks, chunksize=max(1, len(tasks) // (workers * 8)))
        try:
            return pending.get(timeout=timeout)
        except multiprocessing.TimeoutError:
            raise DemoBuildTimeout(f"building the demo world: {workers} workers did not finish {len(tasks)} tasks "
                                   f"in {timeout:.0f} s (MASKALIGN_DEMO_TIMEOUT)") from None


def save_jpeg(array: np.ndarray, path: Path) -> None:
    # Fixed quality and chroma subsampling, no metadata: the bytes depend on the pixels alone.
    image = Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8))
    image.save(path, format="JPEG", quality=JPEG_QUALITY, subsampling=0)


def save_label_png(labels: np.ndarray, path: Path) -> None:
    image = Image.fromarray(np.ascontiguousarray(labels, dtype=np.uint8))
    image.save(path, format="PNG", compress_level=6)


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, separators=(",", ":")) + "\n")
