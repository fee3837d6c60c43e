"""Importing mmsegmentation, with the ``mmcv.ops`` stand-ins when the compiled ops are missing.

Every module of this package that needs mmseg calls :func:`import_mmseg` first; nothing else in
the project imports mmseg, mmcv or mmengine at module level.
"""

from __future__ import annotations

import warnings
from types import ModuleType

from maskalign.errors import UserError

INSTALL_HINT = "run: bash scripts/install_mmseg.sh (mmengine 0.10.7, mmcv-lite 2.1.0, mmsegmentation 1.2.2)"


class MMSegMissing(UserError):
    """mmsegmentation (or one of its engine packages) is not installed or does not import."""


_STATE: dict[str, object] = {}


def import_mmseg() -> ModuleType:
    """Import mmseg with its models, datasets, metrics and engine registered; return ``mmseg``.

    Installs :mod:`maskalign.segmentation.mmcv_ops_shim` as ``mmcv.ops`` when needed, applies the
    mmengine fixes of :mod:`maskalign.segmentation.compat`, and registers this project's additions
    (the layer-decay constructor, the ADE20K-layout dataset) in mmseg's registries. Raises
    :class:`MMSegMissing` (one line) when the stack is absent.
    """
    if "mmseg" in _STATE:
        return _STATE["mmseg"]  # type: ignore[return-value]
    try:
        import mmcv  # noqa: F401
        import mmengine  # noqa: F401
    except ImportError as e:
        raise MMSegMissing(f"mmsegmentation's engine is not installed ({e}); {INSTALL_HINT}") from None
    from maskalign.segmentation import compat, mmcv_ops_shim

    _STATE["stand_ins"] = mmcv_ops_shim.install()
    compat.patch_package_lookup()
    try:
        with warnings.catch_warnings():
            # mmcv-lite's transformer bricks say, once, that the deformable attention op is absent.
            warnings.filterwarnings("ignore", message=".*MultiScaleDeformableAttention.*")
            import mmseg
            import mmseg.datasets
            import mmseg.engine
            import mmseg.evaluation
            import mmseg.models
    except ImportError as e:
        raise MMSegMissing(f"mmsegmentation does not import ({e}); {INSTALL_HINT}") from None
    except AssertionError as e:  # mmseg's own mmcv version assert
        raise MMSegMissing(f"mmsegmentation refuses this mmcv ({str(e).splitlines()[0]}); {INSTALL_HINT}") from None
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=False)
    compat.install_checkpoint_loader()
    _STATE["mmseg"] = mmseg
    try:
        import maskalign.segmentation.ade20k_dataset
        import maskalign.segmentation.layer_decay  # noqa: F401  (registers ViTLayerDecayOptimizerConstructor)
    except BaseException:
        _STATE.pop("mmseg")
        raise
    return mmseg


def mmseg_available() -> tuple[bool, str]:
    """(True, "") when :func:`import_mmseg` works, else (False, the one-line reason)."""
    try:
        import_mmseg()
    except UserError as e:
        return False, str(e)
    return True, ""


def describe() -> str:
    """One line: the versions in use and whether ``mmcv.ops`` is compiled or stood in for."""
    mmseg = import_mmseg()
    import mmcv
    import mmengine

    ops = "pure-PyTorch stand-ins" if _STATE.get("stand_ins") else "compiled"
    return (f"mmsegmentation {mmseg.__version__}, mmcv {mmcv.__version__}, mmengine {mmengine.__version__}; "
            f"mmcv.ops: {ops}")
