"""The one ``--ckpt`` syntax of every transfer job: a file, a timm name or an open_clip name.

* ``path/to/file.pth`` -- any checkpoint file (this project's, an official release, a timm file);
  options after ``#``: ``file.pth#act=quickgelu,num_heads=16``;
* ``timm:<model name>[.tag]`` -- timm's pretrained weights, downloaded by timm itself;
* ``open_clip:<model>/<pretrained tag>`` -- open_clip's image tower, downloaded by open_clip.

File options say what a file cannot: ``act`` (``gelu`` or ``quickgelu``) for CLIP weights that do
not carry OpenAI's metadata (OpenAI and LAION-400M ``-quickgelu`` towers use QuickGELU, the other
open_clip towers GELU, and the tensors are the same either way); ``num_heads`` where the width
alone does not give it (the head count is not stored in any tensor); ``mean``, ``std`` (three
numbers joined by ``/``), ``interpolation`` and ``crop_pct`` for a file whose preprocessing its
family does not say (:mod:`maskalign.encoders.preprocess`), e.g. ``enc.pth#mean=0.5/0.5/0.5,std=0.5/0.5/0.5``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from maskalign.errors import CheckpointError

KINDS = ("file", "timm", "open_clip")
OPTIONS = {"act": ("gelu", "quickgelu"), "num_heads": None, "mean": None, "std": None,
           "interpolation": ("bicubic", "bilinear", "nearest"), "crop_pct": None}


@dataclass(frozen=True)
class EncoderSpec:
    """A parsed ``--ckpt`` value.

    Args:
        kind: ``file``, ``timm`` or ``open_clip``.
        target: the file path, the timm name (with tag) or ``model/tag`` for open_clip.
        options: file options (``act``, ``num_heads``), validated.
        text: the spec as the user wrote it.
    """

    kind: str
    target: str
    options: dict[str, str] = field(default_factory=dict)
    text: str = ""

    @property
    def path(self) -> Path:
        return Path(self.target)


def _options(text: str, fragment: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in filter(None, fragment.split(",")):
        key, eq, value = item.partition("=")
        if not eq or key not in OPTIONS:
            raise CheckpointError(f"{text}: unknown option {item!r} after '#' (known: "
                               f"{', '.join(f'{k}=' for k in OPTIONS)})")
        allowed = OPTIONS[key]
        if allowed is not None and value not in allowed:
            raise CheckpointError(f"{text}: {key} must be one of {', '.join(allowed)}, not {value!r}")
        if key == "num_heads" and not value.isdigit():
            raise CheckpointError(f"{text}: num_heads must be a positive integer, not {value!r}")
        if key == "crop_pct":
            try:
                ok = 0 < float(value) <= 1
            except ValueError:
                ok = False
            if not ok:
                raise CheckpointError(f"{text}: crop_pct must be a number in (0, 1], not {value!r}")
        out[key] = value
    return out


def parse_spec(spec: str | Path | EncoderSpec) -> EncoderSpec:
    """Parse ``spec`` (see the module docstring); one-line :class:`CheckpointError` if malformed."""
    if isinstance(spec, EncoderSpec):
        return spec
    text = str(spec)
    if text.startswith("timm:"):
        name = text[len("timm:"):]
        if not name:
            raise CheckpointError(f"{text}: give a timm model name, e.g. timm:vit_base_patch14_reg4_dinov2.lvd142m")
        return EncoderSpec("timm", name, {}, text)
    if text.startswith("open_clip:"):
        name = text[len("open_clip:"):]
        model, slash, tag = name.partition("/")
        if not slash or not model or not tag:
            raise CheckpointError(f"{text}: write open_clip:<model>/<pretrained tag>, e.g. open_clip:ViT-B-16/openai")
        return EncoderSpec("open_clip", name, {}, text)
    path, hash_, fragment = text.partition("#")
    if hash_ and not Path(text).exists():
        return EncoderSpec("file", path, _options(text, fragment), text)
    return EncoderSpec("file", text, {}, text)


def absolute_spec(spec: str) -> str:
    """``spec`` with a file's path made absolute (options kept), hub names unchanged: for jobs that
    run in another working directory (SLURM)."""
    s = parse_spec(spec)
    if s.kind != "file":
        return s.text
    options = ",".join(f"{k}={v}" for k, v in s.options.items())
    return str(s.path.resolve()) + (f"#{options}" if options else "")
