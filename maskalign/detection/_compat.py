"""Import detectron2 the same way on every install route.

``detectron2.model_zoo`` (which ``model_zoo.get_config`` and so every ViTDet LazyConfig needs)
does ``import pkg_resources`` at import time, for one call: ``resource_filename`` to locate its
bundled config files. setuptools >= 81 no longer ships ``pkg_resources``. Rather than pinning
setuptools for the whole environment, :func:`import_detectron2` hands model_zoo a one-function
stand-in while it is imported, and takes it out of ``sys.modules`` again afterwards, so that no
other package ever sees the stand-in. Where a real ``pkg_resources`` exists it is used unchanged.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
import warnings
from importlib import resources

from maskalign.errors import UserError

INSTALL_HINT = "bash scripts/install_detectron2.sh"


class Detectron2Missing(UserError):
    """detectron2 (or one of the packages its code imports) is not installed."""


def _resource_filename(package: str, resource: str) -> str:
    return str(resources.files(package).joinpath(resource))


def _pkg_resources_standin() -> types.ModuleType:
    mod = types.ModuleType("pkg_resources")
    mod.__doc__ = "maskalign's stand-in for setuptools' pkg_resources: resource_filename only."
    mod.resource_filename = _resource_filename  # type: ignore[attr-defined]
    return mod


def detectron2_available() -> bool:
    return importlib.util.find_spec("detectron2") is not None


def import_detectron2() -> types.ModuleType:
    """Import detectron2 and its model zoo; one-line :class:`Detectron2Missing` if that fails."""
    if "detectron2.model_zoo" in sys.modules:
        return sys.modules["detectron2"]
    if not detectron2_available():
        raise Detectron2Missing(
            f"detectron2 is not installed in this Python ({sys.executable}); run: {INSTALL_HINT}"
        )
    standin = None
    if importlib.util.find_spec("pkg_resources") is None:
        standin = sys.modules["pkg_resources"] = _pkg_resources_standin()
    try:
        # detectron2 decorates a few helpers with torch.jit.script (deprecated in torch 2.14) and
        # imports timm.models.layers (renamed timm.layers): warnings about detectron2's own code,
        # printed on every run, that say nothing about the run.
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit\.script")
        warnings.filterwarnings(
            "ignore", category=FutureWarning, message=r"Importing from timm\.models\.layers"
        )
        import detectron2
        import detectron2.data  # noqa: F401
        import detectron2.engine  # noqa: F401
        import detectron2.evaluation  # noqa: F401
        import detectron2.model_zoo  # noqa: F401  (binds pkg_resources inside model_zoo only)
        import detectron2.modeling  # noqa: F401
    except ImportError as e:
        raise Detectron2Missing(f"detectron2 does not import ({e}); run: {INSTALL_HINT}") from None
    finally:
        if standin is not None and sys.modules.get("pkg_resources") is standin:
            del sys.modules["pkg_resources"]
    return detectron2
