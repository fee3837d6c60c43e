"""Two fixes that mmengine 0.10.7 needs on this stack (torch 2.14, setuptools >= 81).

* **Package lookup.** mmengine's config loader finds installed packages (for
  ``_base_ = 'mmseg::...'``) with ``pkg_resources``, which setuptools >= 81 no longer ships.
  :func:`patch_package_lookup` gives it importlib.metadata equivalents, only when
  ``pkg_resources`` is missing.
* **Checkpoint loading.** torch >= 2.6 loads with ``weights_only=True`` by default, and an
  mmengine checkpoint (``iter_N.pth``) holds, besides tensors, the message hub's
  ``HistoryBuffer`` objects with NumPy arrays and scalars, so resuming and ``--eval-only`` fail
  with an ``UnpicklingError``. :func:`install_checkpoint_loader` replaces mmengine's loader for
  local files with :func:`maskalign.safe_load.load_weights` allowing exactly those types.
  ``HistoryBuffer`` pickles its statistics methods as ``getattr(HistoryBuffer, "mean")``; the builtin
  ``getattr`` reaches any attribute of anything, so it is not allowed: the name is bound to
  :func:`_statistics_method`, which returns only a ``HistoryBuffer``'s own statistics methods.
"""

from __future__ import annotations

import importlib.util
import os.path as osp
from importlib import metadata

from maskalign.errors import CheckpointError


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
    allowed = [HistoryBuffer, np.ndarray, np.dtype, multiarray._reconstruct, multiarray.scalar,
               (_statistics_method, "builtins.getattr")]
    # NumPy >= 1.25 pickles a dtype through its class (numpy.dtypes.Float64DType, ...).
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        allowed += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")]
    return allowed


def _statistics_method(owner, name: str):
    """``getattr`` as a ``HistoryBuffer`` pickle uses it: one of the class's statistics methods, nothing else."""
    from mmengine.logging.history_buffer import HistoryBuffer

    if owner is not HistoryBuffer or name not in ("min", "max", "mean", "current") + tuple(
            HistoryBuffer._statistics_methods):
        raise CheckpointError(f"checkpoint asks for attribute {name!r} of {owner!r}, refused")
    return getattr(owner, name)


def load_from_local_weights_only(filename: str, map_location=None):
    """mmengine's local checkpoint loader: :func:`maskalign.safe_load.load_weights` with the allowlist above."""
    from maskalign.safe_load import load_weights

    obj = load_weights(osp.expanduser(filename), allowed=checkpoint_safe_globals(), error=CheckpointError)
    if map_location not in (None, "cpu"):
        import torch

        obj = _to_device(obj, torch.device(map_location) if isinstance(map_location, str) else map_location)
    return obj


def _to_device(obj, device):
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return type(obj)((k, _to_device(v, device)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(v, device) for v in obj)
    return obj


def install_checkpoint_loader() -> None:
    from mmengine.runner.checkpoint import CheckpointLoader

    CheckpointLoader.register_scheme(prefixes="", loader=load_from_local_weights_only, force=True)
