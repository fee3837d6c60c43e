"""``load_encoder(spec)``: any published ViT as the timm model of its family, exactly, with a report.

See :mod:`maskalign.encoders.source_spec` for the spec syntax, :mod:`maskalign.encoders.families` for
the families and :mod:`maskalign.encoders.convert` for the conversion. The encoder is built with
``num_classes=0``; :meth:`LoadedEncoder.build` builds the same encoder again with a classifier
head, drop path or another image size, from the same tensors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from maskalign.encoders import convert, families, hub
from maskalign.encoders.label import backbone_name, encoder_label, external_method
from maskalign.encoders.provenance import recognise
from maskalign.encoders.report import LoadingReport
from maskalign.encoders.source_spec import CheckpointError, EncoderSpec, parse_spec


@dataclass
class LoadedEncoder:
    """A loaded encoder.

    Args:
        model: the timm model (``forward_features(x)`` gives its tokens), eval mode, no head.
        meta: ``family``, ``label``, ``arch`` (timm model name + kwargs + dims), ``source`` (spec,
            path and sha256, or hub name), and the pre-training metadata of this project's files
            (``method``, ``backbone``, ``supervision``...).
        report: the tensors used and dropped.
        state: the encoder's tensors in the model's names at the stored grid (before resampling).
    """

    model: nn.Module
    meta: dict[str, Any]
    report: LoadingReport
    state: dict[str, torch.Tensor] = field(repr=False)

    @property
    def family(self) -> str:
        return str(self.meta["family"])

    @property
    def arch(self) -> dict[str, Any]:
        return self.meta["arch"]

    def build(self, img_size: int | None = None, new_ok: tuple[str, ...] = (), unused_ok: tuple[str, ...] = (),
              **timm_kwargs: Any) -> tuple[nn.Module, list[str], list[str]]:
        """The encoder as another timm model (``num_classes``, ``global_pool``, ``drop_path_rate``...).

        Returns (model, parameters new to it -- only names starting with ``new_ok`` --, stored
        tensors it has no place for -- only ``unused_ok`` ones, e.g. the final ``norm`` under global
        pooling).
        """
        model = build_model(self.arch, img_size, **timm_kwargs)
        state = convert.fit_to_model(self.state, model, self.family, self.arch.get("pos_interpolation") == "mae")
        missing, unexpected = model.load_state_dict(state, strict=False)
        bad = [k for k in missing if not k.startswith(new_ok)] + [k for k in unexpected if not k.startswith(unused_ok)]
        if bad:  # a fresh head is expected; anything else is a bug in the caller's kwargs
            convert.load_strict(model, state, str(self.meta["source"]["spec"]), self.family, new_ok, unused_ok)
        return model, sorted(missing), sorted(unexpected)


def build_model(arch: dict[str, Any], img_size: int | None = None, **timm_kwargs: Any) -> nn.Module:
    """A fresh timm model of ``arch`` (as in ``LoadedEncoder.meta["arch"]``), no weights loaded."""
    import timm

    if "timm_model" not in arch:  # this project's arch dicts before families: a plain timm ViT
        arch = {**arch, "timm_model": "vit_base_patch16_224",
                "timm_kwargs": {k: arch[k] for k in ("patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio")
                                if k in arch}}
    kwargs = {"num_classes": 0, **arch.get("timm_kwargs", {}), **timm_kwargs,
              "img_size": int(img_size or arch["img_size"])}
    return timm.create_model(arch["timm_model"], pretrained=False, **kwargs)


def _mae_interpolation(family: str, state: dict[str, torch.Tensor]) -> bool:
    """MAE-style files keep MAE's (and DINO's) own position interpolation -- bicubic without antialias,
    the [CLS] row kept -- where the table has that layout; every other source uses timm's."""
    pe = state.get("pos_embed")
    return (family == "vit" and pe is not None and "cls_token" in state and "reg_token" not in state
            and families._square(pe.shape[1] - 1) is not None)


def _arch(family: str, base: str, kwargs: dict[str, Any], native: int, model: nn.Module) -> dict[str, Any]:
    blk: Any = model.blocks[0]
    dim = int(model.embed_dim)
    return {"family": family, "timm_model": base, "timm_kwargs": kwargs, "img_size": int(native),
            "patch_size": int(model.patch_embed.patch_size[0]), "embed_dim": dim, "depth": len(model.blocks),
            "num_heads": int(blk.attn.num_heads), "mlp_ratio": blk.mlp.fc1.out_features / dim}


def _file_meta(path: Path, info: dict[str, Any]) -> dict[str, Any]:
    """This project's metadata: the checkpoint's ``meta`` entry, completed by ``<file>.json`` beside it."""
    meta = dict(info.get("meta", {}))
    side = path.with_suffix(".json")
    if side.is_file():
        try:
            meta = {**json.loads(side.read_text()), **meta}
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{side}: unreadable metadata ({e})") from None
    return meta


def _clip_family(state: dict[str, torch.Tensor], options: dict[str, str], timm_arch: str | None, src: str) -> str:
    if "input_resolution" in state or options.get("act") == "quickgelu":
        return "clip_quickgelu"  # OpenAI's own files carry input_resolution/context_length/vocab_size
    if options.get("act") == "gelu" or timm_arch:
        return "clip"
    raise CheckpointError(f"{src}: CLIP weights do not say their activation: append '#act=quickgelu' (OpenAI, "
                       f"open_clip '-quickgelu' towers) or '#act=gelu' (other open_clip towers) to the path")


def _meta(spec: EncoderSpec, family: str, arch: dict[str, Any], project: dict[str, Any],
          source: dict[str, str], keys: Any = ()) -> dict[str, Any]:
    meta = {k: v for k, v in project.items() if k != "arch"}
    if not meta.get("method"):
        meta.update(method=external_method(family, arch), backbone=backbone_name(arch), supervision="external",
                    external=True)
        meta.update(recognise(keys, family, spec.path if spec.kind == "file" else None,
                              spec.target if spec.kind == "timm" else None))
    meta.update(family=family, arch=arch, source=source)
    meta["label"] = encoder_label(meta)
    return meta


def _from_timm_hub(spec: EncoderSpec, img_size: int | None) -> LoadedEncoder:
    model = hub.timm_pretrained(spec)
    family, base = hub.timm_family(spec.target), spec.target.split(".")[0]
    native = int(model.patch_embed.img_size[0])
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    report = LoadingReport()
    report.notes.append(f"weights fetched and converted by timm.create_model({spec.target!r}, pretrained=True)")
    arch = _arch(family, base, {}, native, model)
    arch["pos_interpolation"] = "timm"
    loaded = LoadedEncoder(model, _meta(spec, family, arch, {}, {"spec": spec.text, "hub": spec.text}), report,
                           state)
    if img_size and img_size != native:
        loaded.model, _, _ = loaded.build(img_size)
        report.notes.append(f"position table resampled {native}px -> {img_size}px by the family's timm filter")
    report.add_used(list(loaded.model.state_dict()))
    loaded.model.eval()
    return loaded


def peek_arch(spec: str | Path | EncoderSpec) -> dict[str, Any] | None:
    """A checkpoint file's ViT sizes (``patch_size``, ``embed_dim``, ``depth``, ``num_heads``,
    ``mlp_ratio``) from its tensors' shapes alone: the file is memory-mapped, not read, so a job can
    refuse an encoder of the wrong size before gigabytes are loaded. ``None`` for hub names."""
    s = parse_spec(spec)
    if s.kind != "file":
        return None
    src, report = str(s.path), LoadingReport()
    raw, info = convert.unwrap(convert.read_checkpoint(s.path, mmap=True), src, report)
    family = families.detect(set(raw), src)
    if family == "clip":  # the activation does not change a size
        family = "clip_quickgelu"
    state = convert.to_timm_names(convert.split_dropped(raw, family, report), family, report)
    if family == "timm_layer_scale":
        family = families.resolve_layer_scale(state)
    given = s.options.get("num_heads") or (_file_meta(s.path, info).get("arch") or {}).get("num_heads")
    _, kwargs, native = families.model_kwargs(family, state, int(given) if given else None, src)
    return {**{k: kwargs[k] for k in ("patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio")},
            "img_size": native, "family": family}


def load_encoder(spec: str | Path | EncoderSpec, img_size: int | None = None) -> LoadedEncoder:
    """Load ``spec`` (a file, ``timm:<name>`` or ``open_clip:<model>/<tag>``) as its family's timm model.

    Args:
        spec: see :mod:`maskalign.encoders.source_spec`.
        img_size: build for this resolution (position tables resampled the family's way); default:
            the resolution the weights were trained at.

    Raises:
        CheckpointError: one line naming the spec and the problem (unknown family, unknown tensors,
            missing tensors, a name timm or open_clip does not have, no network for a hub name).
    """
    import timm

    s = parse_spec(spec)
    if s.kind == "timm":
        with torch.random.fork_rng(devices=[]):
            return _with_preprocess(_from_timm_hub(s, img_size), s)
    report = LoadingReport()
    options = dict(s.options)
    if s.kind == "open_clip":
        with torch.random.fork_rng(devices=[]):
            obj, implied = hub.open_clip_tower(s)
        options = {**implied, **options}
        source = {"spec": s.text, "hub": s.text}
        src = s.text
    else:
        obj = convert.read_checkpoint(s.path)
        from maskalign.records import file_sha256

        source = {"spec": s.text, "path": str(s.path.resolve()), "sha256": file_sha256(s.path)}
        src = str(s.path)
    raw, info = convert.unwrap(obj, src, report)
    project = _file_meta(s.path, info) if s.kind == "file" else {}
    family = families.detect(set(raw), src)
    timm_arch = info.get("timm_arch") if info.get("timm_arch") and timm.is_model(info.get("timm_arch")) else None
    if family == "clip" and (project.get("arch") or {}).get("timm_model"):
        timm_arch = str(project["arch"]["timm_model"])
    if family == "clip":
        family = _clip_family(raw, options, timm_arch, src)
    kept = convert.split_dropped(raw, family, report)
    state = convert.to_timm_names(kept, family, report)
    if family == "timm_layer_scale":
        family = families.resolve_layer_scale(state)
    given = options.get("num_heads") or (project.get("arch") or {}).get("num_heads")
    base, kwargs, native = families.model_kwargs(family, state, int(given) if given else None, src)
    stored = project.get("arch") or {}
    if stored.get("timm_model") and stored.get("family"):  # a file this loader's jobs wrote (a classifier)
        base, family = str(stored["timm_model"]), str(stored["family"])
    elif timm_arch:  # timm's own training checkpoint names its model: its defaults (heads, eps, act) are exact
        base = timm_arch
        if not given:
            kwargs.pop("num_heads", None)
    arch = {"timm_model": base, "timm_kwargs": kwargs, "img_size": native}
    with torch.random.fork_rng(devices=[]):  # loading must not move the job's seeded random stream
        model = build_model(arch, img_size)
    fitted = convert.fit_to_model(state, model, family, _mae_interpolation(family, state))
    report.add_used(convert.load_strict(model, fitted, src, family))
    size = int(img_size or native)
    if size != native:
        how = "MAE's bicubic interpolation" if _mae_interpolation(family, state) else "the family's timm filter"
        report.notes.append(f"position table resampled {native}px -> {size}px ({how})")
    full_arch = _arch(family, base, kwargs, native, model)
    full_arch["pos_interpolation"] = "mae" if _mae_interpolation(family, state) else "timm"
    meta = _meta(s, family, full_arch, project, source, raw)
    if timm_arch and not project.get("method"):
        meta["timm_arch"] = timm_arch
    return _with_preprocess(LoadedEncoder(model.eval(), meta, report, state), s)


def _with_preprocess(loaded: LoadedEncoder, spec: EncoderSpec) -> LoadedEncoder:
    """The encoder's own input statistics in its metadata (jobs build their transforms from them)."""
    from maskalign.encoders.preprocess import preprocess_for

    loaded.meta["preprocess"] = preprocess_for(spec.text, loaded.meta).as_dict()
    return loaded
