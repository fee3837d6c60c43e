"""mmseg dataset for the ADE20K layout whose class list comes from the data folder.

``ADE20KLayoutDataset`` is mmseg's ``ADE20KDataset`` (``.jpg`` images, ``.png`` annotations,
``reduce_zero_label=True``) except that the classes are read from the tree: ``classes.json`` when
present (the demo world's copy, K classes), else ADE20K's 150 classes and palette. One config thus
serves the real release and the demo copy. Imported (and registered) by ``import_mmseg``.
"""

from __future__ import annotations

from typing import Any

from mmseg.datasets import ADE20KDataset, BaseSegDataset
from mmseg.registry import DATASETS

from maskalign.segmentation.datasets import class_names


def metainfo_for(root: str) -> dict[str, Any]:
    names = class_names(root)
    if names is None:
        return {"classes": tuple(ADE20KDataset.METAINFO["classes"]),
                "palette": list(ADE20KDataset.METAINFO["palette"])}
    return {"classes": names}


@DATASETS.register_module()
class ADE20KLayoutDataset(BaseSegDataset):
    """ADEChallengeData2016 layout; classes from the tree (module docstring)."""

    def __init__(self, data_root: str, metainfo: dict | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("img_suffix", ".jpg")
        kwargs.setdefault("seg_map_suffix", ".png")
        kwargs.setdefault("reduce_zero_label", True)
        super().__init__(data_root=data_root, metainfo=metainfo or metainfo_for(data_root), **kwargs)
