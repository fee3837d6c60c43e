"""The one way any job opens a weights file: tensors and plain values, never code.

Every file a job loads (its own checkpoints, ``--ckpt``, detectron2's ``--weights`` and
``last_checkpoint``, mmengine's checkpoints, sidecars) goes through :func:`load_weights`:

* ``.safetensors`` files are read with safetensors (tensors only, by construction);
* everything else with ``torch.load(weights_only=True)``, whose unpickler rebuilds only tensors,
  containers and plain values, plus the few classes a caller names (``allowed``);
* a plain pickle (``.pkl``, detectron2's and Detectron1's model-zoo format) and a TorchScript
  archive (a zip holding ``code/`` or ``constants.pkl``) are refused before a byte is unpickled:
  both run code when opened.

Every refusal is one line naming the file and how to convert it; none advises ``weights_only=False``.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Any

from maskalign.errors import CheckpointError, UserError

PICKLE_SUFFIXES = (".pkl", ".pickle")
CONVERT_HINT = ("convert it where you trust it, with its publisher's own tooling, to a file of tensors "
                "(torch.save(model.state_dict()) or safetensors)")


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (OSError, zipfile.BadZipFile):
        return False
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


def _reason(err: BaseException) -> str:
    """torch's error as a short cause, without its advice to load the file unsafely."""
    text = str(err)
    m = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", text)
    if m:
        return f"it holds a Python object ({m.group(1)}) that only code can rebuild"
    m = re.search(r"Unsupported operand (\d+)|Trying to call reduce for ([\w.]+)", text)
    if m:
        return "it asks to call code while being read"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and "weights_only" not in ln
             and "can still be loaded" not in ln and "trust the source" not in ln]
    first = lines[0].split(". ")[0].rstrip(".") if lines else type(err).__name__
    return f"not a readable checkpoint ({first})"


def load_weights(path: str | Path, allowed: list | tuple = (), error: type[UserError] = CheckpointError,
                 mmap: bool = False) -> Any:
    """The file's object (tensors, containers, plain values, and the ``allowed`` classes only).

    ``allowed`` are passed to ``torch.serialization.safe_globals`` (classes or ``(callable, name)``
    pairs); ``error`` is the ``UserError`` subclass raised, so callers keep their own error type.
    ``mmap=True`` maps a zip-format file instead of reading it: the tensors' shapes are there at once
    and their data is read only where touched (a check of sizes before a gigabyte is read).
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: checkpoint not found")
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise error(f"{path}: a pickle file (it runs code when opened), refused; {CONVERT_HINT}")
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as e:  # noqa: BLE001 -- safetensors raises its own types for a bad header
            raise error(f"{path}: not a readable safetensors file ({str(e).splitlines()[0][:160]})") from None
    if _is_torchscript(path):
        raise error(f"{path}: a TorchScript archive (it holds code), refused; {CONVERT_HINT}")
    try:
        with torch.serialization.safe_globals(list(allowed)):
            if mmap and zipfile.is_zipfile(path):
                return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 -- torch raises many types for truncated or foreign files
        reason = _reason(e)
        hint = f"; {CONVERT_HINT}" if "code" in reason else ""
        raise error(f"{path}: {reason}, refused{hint}" if "code" in reason else f"{path}: {reason}") from None
