"""detectron2's checkpointer, reading every file through the one weights-only loader.

``DetectionCheckpointer`` unpickles a ``.pkl`` file (detectron2's model-zoo format) with plain
``pickle.load``, and whatever ``last_checkpoint`` names is opened the same way: a payload in it
would run. :class:`SafeDetectionCheckpointer` reads ``--weights``, the run folder's
``last_checkpoint`` and the converted encoder with :func:`maskalign.safe_load.load_weights`
instead: tensors and plain values only, pickles and TorchScript archives refused in one line.
"""

from __future__ import annotations

from typing import Any

from detectron2.checkpoint import DetectionCheckpointer

from maskalign.errors import CheckpointError
from maskalign.safe_load import load_weights


class SafeDetectionCheckpointer(DetectionCheckpointer):
    def _load_file(self, filename: str) -> dict[str, Any]:
        loaded = load_weights(filename, error=CheckpointError)
        if not isinstance(loaded, dict):
            raise CheckpointError(f"{filename}: holds no state dict (a {type(loaded).__name__})")
        return loaded if "model" in loaded else {"model": loaded}
