"""Label spaces: which class each logit of a classifier stands for, and the benchmark subsets in it.

ImageNet-A and ImageNet-R cover 200 of ImageNet's 1000 classes; they are scored by keeping only
the logits of those classes (``hendrycks/natural-adv-examples:eval.py``,
``hendrycks/imagenet-r:eval.py``). Rather than hard-code index lists per data set, a label space
holds the classifier's class list (wnids, in logit order) and each benchmark's subset as wnids;
the logit columns are then *derived* (position of each subset wnid in the class list). For the
real 1000-class space this yields exactly the official index lists (checked by the tests); for the
demo world's 10 classes it yields the demo's own subsets -- one code path for both.

Target order inside a subset follows ``ImageFolder``: the subset's wnids sorted, which is also the
order of the derived columns, so target ``i`` is column ``i``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from maskalign.errors import DataError

CLASS_LIST_DIR = Path(__file__).resolve().parents[1] / "data" / "class_lists"
SUBSET_NAMES = ("imagenet_a", "imagenet_r")


def read_class_list(name: str) -> list[str]:
    """Lines of ``maskalign/data/class_lists/<name>.txt`` (wnids or integer indices)."""
    path = CLASS_LIST_DIR / f"{name}.txt"
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


@dataclass(frozen=True, eq=False)
class LabelSpace:
    """A classifier's classes in logit order, plus benchmark subsets given as wnid lists.

    Args:
        name: ``imagenet1k``, ``demo`` or ``custom``; recorded with the results.
        wnids: one wnid per logit, in logit order.
        subsets: benchmark name (``imagenet_a``, ``imagenet_r``) -> the wnids it covers.
    """

    name: str
    wnids: tuple[str, ...]
    subsets: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.wnids)

    def class_to_idx(self) -> dict[str, int]:
        """Folder name -> target for data sets whose folders are this space's wnids."""
        return {w: i for i, w in enumerate(self.wnids)}

    def index_folders(self) -> dict[str, int]:
        """Folder name -> target for ImageNet-V2's layout, whose folders are named ``0..K-1``.

        ``ImageFolder`` would sort them as strings (0, 1, 10, 100, ...) and scramble the labels.
        """
        return {str(i): i for i in range(self.num_classes)}

    def subset_wnids(self, subset: str) -> tuple[str, ...]:
        if subset not in self.subsets:
            raise DataError(f"label space {self.name!r} defines no {subset!r} subset "
                                  f"(known: {', '.join(sorted(self.subsets)) or 'none'})")
        wnids = tuple(sorted(self.subsets[subset]))
        if not wnids:
            raise DataError(f"label space {self.name!r}: the {subset!r} subset shares no class "
                                  f"with this classifier")
        return wnids

    def subset_indices(self, subset: str) -> list[int]:
        """The logit columns of ``subset``, in the order of its (sorted) wnids."""
        index = self.class_to_idx()
        wnids = self.subset_wnids(subset)
        missing = [w for w in wnids if w not in index]
        if missing:
            raise DataError(f"label space {self.name!r} lacks {len(missing)} class(es) of "
                                  f"{subset!r}, e.g. {missing[:3]}")
        return [index[w] for w in wnids]

    def subset_class_to_idx(self, subset: str) -> dict[str, int]:
        """Folder name -> target for a subset benchmark: position among the subset's sorted wnids."""
        return {w: i for i, w in enumerate(self.subset_wnids(subset))}


@cache
def imagenet1k() -> LabelSpace:
    """The real ImageNet-1k label space with the official ImageNet-A and -R subsets."""
    return LabelSpace("imagenet1k", tuple(read_class_list("imagenet_wnids")),
                      {s: tuple(read_class_list(f"{s}_wnids")) for s in SUBSET_NAMES})


@cache
def demo() -> LabelSpace:
    """The demo world's label space with its own ImageNet-A/-R look-alike subsets."""
    from maskalign.data.demo_world.robustness_layouts import DEMO_SUBSETS
    from maskalign.data.demo_world.shapes import WNIDS

    return LabelSpace("demo", tuple(WNIDS), {k: tuple(v) for k, v in DEMO_SUBSETS.items()})


def for_classes(wnids: Sequence[str]) -> LabelSpace:
    """The label space of a classifier trained on folders named ``wnids`` (in logit order).

    ImageNet-1k and the demo world are recognised exactly. Any other class list (an ImageNet
    subset, say) keeps, for each benchmark subset, the classes it shares with the real one.
    """
    wnids = tuple(wnids)
    for known in (imagenet1k(), demo()):
        if wnids == known.wnids:
            return known
    have = set(wnids)
    real = imagenet1k()
    return LabelSpace("custom", wnids,
                      {s: tuple(w for w in real.subsets[s] if w in have) for s in SUBSET_NAMES})
