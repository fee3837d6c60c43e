"""How big the demo world is: the full copy a first run uses, or a tiny one built in seconds.

The full world (1,500 ImageNet-layout images, a teacher trained for a few CPU-minutes) is what shows
that pre-training helps. Quick tests need only the layouts and a teacher of the right shape, so
``MASKALIGN_DEMO_SIZE=tiny`` makes every builder that is not given explicit sizes build a few
images per class and train the teacher for a fraction of the corpus and epochs. Image ``i`` of a
class is the same at every size (:func:`~.imagenet_layout.write_class_folders`), so the tiny copy
is the first images of the full one.
"""

from __future__ import annotations

import os

from maskalign.errors import UserError

SIZE_ENV = "MASKALIGN_DEMO_SIZE"

# Per preset, per builder: its size arguments. Tiny keeps what the quick tests slice out of the
# world: 8 train and 4 val images per class, 12 ADE20K val images (the oracle test reads 12).
SIZES: dict[str, dict[str, dict[str, int]]] = {
    "full": {
        "imagenet": {"train_per_class": 120, "val_per_class": 30},
        "coco": {"train_images": 200, "val_images": 50},
        "ade20k": {"train_images": 200, "val_images": 50},
        "teacher": {"epochs": 12, "corpus": 3000},
    },
    "tiny": {
        "imagenet": {"train_per_class": 8, "val_per_class": 4},
        "coco": {"train_images": 12, "val_images": 6},
        "ade20k": {"train_images": 12, "val_images": 12},
        "teacher": {"epochs": 2, "corpus": 256},
    },
}


def world_size() -> str:
    """``$MASKALIGN_DEMO_SIZE`` (``full`` or ``tiny``), ``full`` when unset."""
    name = os.environ.get(SIZE_ENV) or "full"
    if name not in SIZES:
        raise UserError(f"{SIZE_ENV}={name!r}: unknown demo-world size; one of {sorted(SIZES)}")
    return name


def sizes_of(builder: str, **given: int | None) -> dict[str, int]:
    """``builder``'s size arguments: those ``given`` (not ``None``), the rest from the current preset."""
    return {k: v if given.get(k) is None else int(given[k]) for k, v in SIZES[world_size()][builder].items()}
