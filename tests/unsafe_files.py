"""Files that run code when opened the unsafe way: each leaves a trace if it ever does.

* :func:`pickle_payload` -- a plain pickle whose ``__reduce__`` creates ``marker`` (``pickle.load``
  of detectron2's ``.pkl`` route, or ``torch.load(weights_only=False)``, would create it);
* :func:`torch_payload` -- the same payload saved by ``torch.save`` under a ``.pth`` name;
* :func:`torchscript_archive` -- a TorchScript module whose ``__setstate__`` (run by
  ``torch.jit.load``) prints :data:`SCRIPT_SENTINEL`; TorchScript cannot write files, so its trace
  is that line on the loading process's stdout.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

SCRIPT_SENTINEL = "TORCHSCRIPT-CODE-RAN"


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))  # opening for writing creates the marker file


def pickle_payload(path: Path, marker: Path) -> Path:
    path.write_bytes(pickle.dumps({"model": {"w": _Payload(marker)}, "__author__": "x"}))
    return path


def torch_payload(path: Path, marker: Path) -> Path:
    torch.save({"model": {"w": _Payload(marker)}}, path)
    return path


class _Scripted(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.cls_token = torch.nn.Parameter(torch.zeros(1, 1, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.cls_token

    @torch.jit.export
    def __getstate__(self) -> tuple[torch.Tensor, bool]:
        return (self.cls_token, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, bool]) -> None:
        print("TORCHSCRIPT-CODE-RAN")  # SCRIPT_SENTINEL (TorchScript cannot read a global)
        self.cls_token = state[0]
        self.training = state[1]


def torchscript_archive(path: Path) -> Path:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(_Scripted()), str(path))
    return path
