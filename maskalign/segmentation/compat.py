"""Two fixes that mmengine 0.10.7 needs on this stack (torch 2.14, setuptools >= 81).

* **Package lookup.** mmengine's config loader finds installed packages (for
  ``_base_ = 'mmseg::...'``) with ``pkg_resources``, which setuptools >= 81 no longer ships.
  :func:`patch_package_lookup` gives it importlib.metadata equivalents, only when
  ``pkg_resources`` is missing.
* **Checkpoint loading.** torch >= 2.6 loads with ``weights_only=True`` by default, and an
  mmengine checkpoint (``iter_N.pth``) holds, besides tensors, the message hub's
  ``HistoryBuffer`` objects with NumPy arrays and scalars, so resuming and ``--eval-only`` fail
  with an ``UnpicklingError``. :func:`install_checkpoint_loader` replaces mmengine's loader for
  local files with one that still loads ``weights_only=True`` but allows exactly those types
  (and ``getattr``, with which ``HistoryBuffer`` pickles its statistics methods). The
  weights-only unpickler calls nothing outside that list, so a checkpoint still cannot run code.
"""

from __future__ import annotations

import importlib.util
import os.path as osp
from importlib import metadata

from maskalign.errors import UserError


def _installed_path(package: str) -> str:
    """Where an installed distribution's top-level module lives (mmengine's helper, sans pkg_resources)."""
    try:
        dist = metadata.distribution(package)
    except metadata.PackageNotFoundError:
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            raise ModuleNotFoundError(f"{package} is not installed") from None
        return osp.dirname(spec.origin)
    top = (dist.read_text("top_level.txt") or package).split()[0]
    return str(dist.locate_file(top))


def _is_installed(package: str) -> bool:
    try:
        _installed_path(package)
    except ModuleNotFoundError:
        return False
    return True


def patch_package_lookup() -> None:
    try:
        import pkg_resources  # noqa: F401
        return
    except ImportError:
        pass
    import mmengine.config.config as mm_config

    mm_config.is_installed = _is_installed
    mm_config.get_installed_path = _installed_path


def checkpoint_safe_globals() -> list:
    """The non-tensor types an mmengine training checkpoint holds."""
    import numpy as np
    from mmengine.logging.history_buffer import HistoryBuffer

    try:
        from numpy._core import multiarray
    except ImportError:  # NumPy 1.x
        from numpy.core import multiarray  # type: ignore[no-redef]
    allowed = [HistoryBuffer, np.ndarray, np.dtype, multiarray._reconstruct, multiarray.scalar, getattr]
    # NumPy >= 1.25 pickles a dtype through its class (numpy.dtypes.Float64DType, ...).
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        allowed += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")]
    return allowed


class CheckpointLoadError(UserError):
    """A model checkpoint that mmengine cannot (or may not) load."""


def load_from_local_weights_only(filename: str, map_location=None):
    """mmengine's local checkpoint loader, ``weights_only=True`` with the allowlist above."""
    import pickle

    import torch

    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise CheckpointLoadError(f"{filename}: checkpoint not found")
    try:
        with torch.serialization.safe_globals(checkpoint_safe_globals()):
            return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first = (str(e).strip().splitlines() or ["unpickling error"])[0]
        raise CheckpointLoadError(f"{filename}: not a plain mmengine checkpoint ({first[:200]})") from None


def install_checkpoint_loader() -> None:
    from mmengine.runner.checkpoint import CheckpointLoader

    CheckpointLoader.register_scheme(prefixes="", loader=load_from_local_weights_only, force=True)
