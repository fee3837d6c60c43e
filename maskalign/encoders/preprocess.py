"""How an encoder wants its images: mean, std, resize interpolation and crop, from the encoder itself.

An encoder is evaluated with the normalisation it was trained with; ImageNet's mean and std for
every encoder would hand CLIP (OpenAI's statistics) and timm's AugReg models (0.5/0.5) inputs they
never saw. The statistics come from, in this order:

1. the spec's own options after ``#`` (``file.pth#mean=0.5/0.5/0.5,std=0.5/0.5/0.5,interpolation=bilinear,
   crop_pct=0.9``): for a file that says nothing of itself;
2. what a job of this project stored with a file it wrote (a fine-tuned classifier keeps its
   encoder's ``preprocess``);
3. a timm name (``timm:<model>.<tag>``): timm's ``pretrained_cfg`` of that tag; a file timm wrote
   (its ``timm_arch``) likewise; an open_clip name: open_clip's pretrained config of that tag;
4. a file's family: CLIP files OpenAI's statistics (open_clip's constants), DINOv2 and DeiT III
   timm's ``pretrained_cfg`` of the family's model; plain ViT files (MAE, CrossMAE, LUT,
   MaskAlign, DINO, this project's sidecar) ImageNet's, as their own recipes.

``crop_pct`` is ``None`` when the source does not state one: the job's config decides.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from maskalign.encoders.source_spec import CheckpointError, parse_spec

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = ("bicubic", "bilinear", "nearest")
# Families whose published weights share one normalisation, and the timm model whose pretrained_cfg says it.
_FAMILY_TIMM_CFG = {"dinov2": "vit_base_patch14_dinov2", "dinov2_reg": "vit_base_patch14_reg4_dinov2",
                    "deit3": "deit3_base_patch16_224", "deit_distilled": "deit_base_distilled_patch16_224",
                    "beit": "beit_base_patch16_224"}


@dataclass(frozen=True)
class Preprocess:
    """The input statistics of one encoder, and where they were read."""

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bicubic"
    crop_pct: float | None = None
    source: str = "ImageNet (the project's default)"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std)}

    def pixel_stats(self) -> tuple[list[float], list[float]]:
        """Mean and std on the 0-255 scale of the dense engines' pixel normalisation (detectron2's
        ``model.pixel_mean``/``pixel_std``, mmseg's ``data_preprocessor``), in RGB order."""
        return [255.0 * m for m in self.mean], [255.0 * s for s in self.std]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        return cls(tuple(d["mean"]), tuple(d["std"]), str(d.get("interpolation") or "bicubic"),  # type: ignore[arg-type]
                   d.get("crop_pct"), str(d.get("source") or "stored with the checkpoint"))


def _triple(text: str, what: str, spec: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split("/"))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise CheckpointError(f"{spec}: {what} must be three numbers joined by '/', e.g. {what}=0.5/0.5/0.5, "
                           f"not {text!r}")
    return values  # type: ignore[return-value]


def _from_timm(name: str, how: str) -> Preprocess:
    import timm

    try:
        cfg = timm.get_pretrained_cfg(name)
    except Exception:  # noqa: BLE001 - an unknown name: timm raises several kinds
        cfg = None
    if cfg is None:
        return Preprocess(source=f"ImageNet (timm has no pretrained_cfg for {name})")
    return Preprocess(tuple(cfg.mean), tuple(cfg.std), str(cfg.interpolation or "bicubic"),  # type: ignore[arg-type]
                      float(cfg.crop_pct) if cfg.crop_pct else None, f"timm pretrained_cfg of {name} ({how})")


def _from_open_clip(target: str) -> Preprocess:
    import open_clip

    model, _, tag = target.partition("/")
    cfg = open_clip.get_pretrained_cfg(model, tag) or {}
    mean = tuple(cfg.get("mean") or open_clip.OPENAI_DATASET_MEAN)
    std = tuple(cfg.get("std") or open_clip.OPENAI_DATASET_STD)
    # open_clip evaluates with a resize of the short side to the input size and a center crop: crop 1.0
    return Preprocess(mean, std, str(cfg.get("interpolation") or "bicubic"), 1.0,  # type: ignore[arg-type]
                      f"open_clip pretrained config of {target}")


def _overrides(base: Preprocess, options: dict[str, str], spec: str) -> Preprocess:
    given = {k: options[k] for k in ("mean", "std", "interpolation", "crop_pct") if k in options}
    if not given:
        return base
    mean = _triple(given["mean"], "mean", spec) if "mean" in given else base.mean
    std = _triple(given["std"], "std", spec) if "std" in given else base.std
    crop = float(given["crop_pct"]) if "crop_pct" in given else base.crop_pct
    return Preprocess(mean, std, given.get("interpolation", base.interpolation), crop,
                      f"given after '#' in {spec} (else {base.source})")


def preprocess_for(spec: str, meta: dict[str, Any] | None = None) -> Preprocess:
    """The preprocessing of the encoder ``spec`` whose loaded metadata is ``meta`` (see the module docstring)."""
    s = parse_spec(spec)
    meta = meta or {}
    family = str(meta.get("family") or "")
    if meta.get("preprocess"):
        base = Preprocess.from_dict(meta["preprocess"])
    elif s.kind == "timm":
        base = _from_timm(s.target, "timm name")
    elif s.kind == "open_clip":
        base = _from_open_clip(s.target)
    elif meta.get("timm_arch"):
        base = _from_timm(str(meta["timm_arch"]), "the file's timm model")
    elif family.startswith("clip"):
        import open_clip

        base = Preprocess(tuple(open_clip.OPENAI_DATASET_MEAN), tuple(open_clip.OPENAI_DATASET_STD),  # type: ignore[arg-type]
                          "bicubic", 1.0, "OpenAI CLIP statistics (open_clip's constants) for a CLIP file")
    elif family in _FAMILY_TIMM_CFG:
        base = _from_timm(_FAMILY_TIMM_CFG[family], f"the {family} family")
    else:
        base = Preprocess(source="ImageNet (a plain ViT file: MAE-style recipes and this project's sidecar)")
    return _overrides(base, dict(s.options), s.text)
