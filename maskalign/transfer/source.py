"""The pre-trained encoder a transfer job consumes, as its record describes it.

Every transfer job (fine-tuning, linear probe, COCO, ADE20K, robustness) starts from ``--ckpt``:
a checkpoint of any pre-training objective here, a published encoder's official file, a timm or
open_clip name (:mod:`maskalign.encoders`). :func:`load_pretrained` is the one place that loads
it -- exactly, with a loading report -- and the record (:meth:`maskalign.tasks.context.RunContext.write_record`)
inherits what the tables group by
(method, backbone, supervision, ratios, epochs, paper row) from its metadata; an external
encoder's method is ``external:<family>:<backbone>`` and the record's config holds its loading
report.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from maskalign.encoders import LoadedEncoder, LoadingReport, load_encoder


@dataclass
class PretrainedEncoder:
    """A job's source encoder.

    Args:
        path: the checkpoint file (or the hub spec as a path-like name).
        state: the encoder's tensors in timm's names, at the stored grid.
        meta: pre-training metadata plus ``family``, ``label``, ``arch``, ``source``.
        ref: how records point at it: path + sha256 (or hub spec), family, label.
        loaded: the loaded encoder (timm model, report), see :class:`maskalign.encoders.LoadedEncoder`.
    """

    path: Path
    state: dict[str, torch.Tensor]
    meta: dict[str, Any]
    ref: dict[str, str]
    loaded: LoadedEncoder

    @property
    def arch(self) -> dict[str, Any]:
        return self.meta["arch"]

    @property
    def family(self) -> str:
        return self.loaded.family

    @property
    def model(self) -> nn.Module:
        return self.loaded.model

    @property
    def report(self) -> LoadingReport:
        return self.loaded.report

    def describe(self) -> list[str]:
        """What was loaded, for a job's log: label, family, timm model, then the loading report."""
        a = self.arch
        from maskalign.encoders.families import built_timm_name

        head = (f"encoder {self.meta.get('label')}: family {self.family}, timm {built_timm_name(a)} "
                f"(width {a['embed_dim']}, depth {a['depth']}, heads {a['num_heads']}, patch {a['patch_size']}, "
                f"{a['img_size']}px) from {self.ref.get('spec')}")
        return [head] + [f"  {line}" for line in self.report.lines()]


def load_pretrained(spec: str | Path) -> PretrainedEncoder:
    """The encoder of ``spec`` (file, ``timm:``, ``open_clip:``); one-line ``CheckpointError`` otherwise."""
    loaded = load_encoder(spec)
    src = loaded.meta["source"]
    if "path" in src:
        ref = {"path": src["path"], "sha256": src["sha256"]}
        path = Path(src["path"])
    else:
        ref = {"hub": src["hub"]}
        path = Path(str(spec))
    ref.update(spec=src["spec"], family=loaded.family, encoder=str(loaded.meta["label"]))
    return PretrainedEncoder(path, loaded.state, loaded.meta, ref, loaded)


def encoder_record(source: PretrainedEncoder) -> dict[str, Any]:
    """The ``encoder`` entry of a job record's config: what was loaded and how."""
    m = source.meta
    return {"family": source.family, "label": m.get("label"), "arch": source.arch, "source": m.get("source"),
            "origin": origin_of(m), "external": bool(m.get("external")), "pretraining": m.get("pretraining"),
            "preprocess": m.get("preprocess"), "loading": source.report.as_dict()}


def origin_of(meta: dict[str, Any]) -> dict[str, Any] | None:
    """The pre-trained encoder at the start of a chain: a fine-tuned classifier's meta keeps the
    ``origin`` of the file its fine-tune started from, so robustness rows join their encoder's."""
    return meta.get("origin") or meta.get("source")
