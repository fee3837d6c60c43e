"""The ADE20K job: an mmengine Runner over an mmseg config, from a pre-trained encoder to a record.

One job (a :class:`~maskalign.tasks.spec.JobSpec`; ``options``: ``data_root``, ``eval_only``,
``weights``) = one output folder ``<output_root>/ade20k/<run>/`` (mmengine's ``work_dir``) holding the
converted backbone weights, mmengine's checkpoints and logs, the resolved config and, at the end,
``record.json`` with ``miou``/``aacc``/``macc`` (percent, as mmseg's ``IoUMetric`` reports them).
``--eval-only`` on the same folder re-evaluates the newest model and rewrites that record (same
run, same training description, fresh metrics); on a new folder (``--weights`` from elsewhere) it
writes a record of its own.

What the job adds to the config file (nothing else is changed):

* the backbone must have the checkpoint's arch (width, depth, heads, patch, MLP ratio) — a
  mismatch is refused, since a different arch needs a different recipe (out_indices, decay);
* ``backbone.init_cfg`` loads the converted encoder (``backbone_init.pth``), ``pos_embed`` resized
  to the config's patch grid; the job first checks that it fits the backbone key for key;
* ``data_root`` of every split and ``num_classes`` of both heads come from the data folder;
* one process: SyncBN -> BN; no GPU: AmpOptimWrapper -> OptimWrapper; several processes (torchrun
  or SLURM tasks): the process group is set up here and mmengine wraps the model in DDP;
* ``resume=True``: a requeued job continues from mmengine's ``last_checkpoint`` in the folder.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import Any

from maskalign.config import config_dir, find_config_file
from maskalign.errors import ConfigError, UserError
from maskalign.metric_names import Metric
from maskalign.safe_load import load_weights
from maskalign.tasks.context import RunContext
from maskalign.tasks.spec import JobSpec

SEG_CONFIG_DIR = config_dir("ade20k")
DEFAULT_CONFIG = "upernet_vit_tiny_demo_128"
BACKBONE_INIT = "backbone_init.pth"


def resolve_config(name: str | os.PathLike) -> Path:
    """An mmengine config by path, or by name (with or without ``.py``) in ``maskalign/configs/ade20k/``."""
    found = find_config_file(name, SEG_CONFIG_DIR, ".py")
    if found is not None:
        return found.resolve()
    known = ", ".join(sorted(c.stem for c in SEG_CONFIG_DIR.glob("*.py")))
    raise ConfigError(f"segmentation config {str(name)!r} not found (looked in {SEG_CONFIG_DIR}; known: {known})")


def config_of(spec: JobSpec) -> Path:
    """The config file of a job: the one found before launch, else ``spec.config`` or the default, found now."""
    return Path(spec.config_path) if spec.config_path else resolve_config(spec.config or DEFAULT_CONFIG)


def _parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _has_path(cfg: Any, dotted: str) -> bool:
    node = cfg
    for part in dotted.split("."):
        if isinstance(node, (list, tuple)) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif hasattr(node, "keys") and part in node:
            node = node[part]
        else:
            return False
    return True


def load_seg_config(config: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()):
    """The mmengine ``Config`` of ``config`` with ``key=value`` overrides.

    A key must exist in the config (a typo would otherwise be silently ignored); ``+key=value``
    adds a new one under an existing parent. Values are Python literals where they parse as one
    (``1e-4``, ``[1, 2]``, ``None``), strings otherwise; list items are addressed by index
    (``param_scheduler.1.end=1000``).
    """
    from mmengine.config import Config

    from maskalign.segmentation.mmseg_import import import_mmseg

    import_mmseg()
    path = resolve_config(config)
    try:
        cfg = Config.fromfile(str(path))
    except Exception as e:  # noqa: BLE001  (mmengine raises many types for a broken config file)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"{path}: cannot load config ({first[:200]})") from None
    options = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        add = key.startswith("+")
        key = key[1:] if add else key
        if not sep or not key:
            raise ConfigError(f"command line: override {item!r} is not of the form key=value")
        if add:
            parent = key.rpartition(".")[0]
            if parent and not _has_path(cfg, parent):
                raise ConfigError(f"command line: cannot add '{key}': no '{parent}' in {path.name}")
        elif not _has_path(cfg, key):
            raise ConfigError(f"command line: unknown config key '{key}' in {path.name} "
                                 f"(write +{key}=... to add a new key)")
        options[key] = _parse_value(value)
    if options:
        cfg.merge_from_dict(options, allow_list_keys=True)
    return cfg


def _replace_norm(node: Any, old: str, new: str) -> None:
    """Change every ``norm_cfg`` of type ``old`` to ``new`` inside a config tree, in place."""
    if hasattr(node, "items"):
        for key, value in node.items():
            if key == "norm_cfg" and hasattr(value, "get") and value.get("type") == old:
                value["type"] = new
            else:
                _replace_norm(value, old, new)
    elif isinstance(node, (list, tuple)):
        for item in node:
            _replace_norm(item, old, new)


def check_arch(backbone_cfg: Any, arch: dict[str, Any], config_name: str) -> None:
    """Refuse a checkpoint whose ViT differs from the config's backbone (one line, both named)."""
    mlp = float(arch.get("mlp_ratio", 4.0))
    want = {"embed_dims": int(arch["embed_dim"]), "num_layers": int(arch["depth"]),
            "num_heads": int(arch["num_heads"]), "patch_size": int(arch["patch_size"]), "mlp_ratio": mlp}
    have = {k: backbone_cfg.get(k) for k in want}
    if want["patch_size"] == 14 and have["patch_size"] == 16:  # DINOv2 under a /16 recipe: its stride-14 maps
        have["patch_size"] = 14  # feed the neck as they are (UperNet resizes every level to the first)
    diff = [f"{k} {have[k]} (config) vs {v} (checkpoint)" for k, v in want.items()
            if have[k] is None or float(have[k]) != float(v)]
    if diff:
        raise ConfigError(f"{config_name}: backbone does not match the checkpoint's ViT: {'; '.join(diff)} "
                             "(pick the config made for this arch)")


def prepare_config(cfg: Any, spec: JobSpec, arch: dict[str, Any], num_classes: int, world_size: int,
                   on_gpu: bool, init_checkpoint: Path | None) -> Any:
    """Apply the job's settings to ``cfg`` in place (module docstring) and return it."""
    bb = cfg.model.backbone
    from maskalign.segmentation.fit_demo import DEMO_CONFIGS, clip_schedules, fit_demo_config

    notes = fit_demo_config(cfg, arch, config_of(spec).name) if config_of(spec).stem in DEMO_CONFIGS else []
    notes += clip_schedules(cfg)
    for note in notes:
        print(f"[ade20k] note: {note}", flush=True)
    check_arch(bb, arch, config_of(spec).name)
    if bb.get("type") != "MAE":
        raise ConfigError(f"{config_of(spec)}: backbone type {bb.get('type')!r} is not mmseg's MAE ViT "
                             "(the only backbone the converted encoder loads into exactly)")
    bb["mlp_ratio"] = int(bb["mlp_ratio"]) if float(bb["mlp_ratio"]).is_integer() else bb["mlp_ratio"]
    cfg.model.pretrained = None
    if init_checkpoint is not None:
        bb["init_cfg"] = {"type": "Pretrained", "checkpoint": str(init_checkpoint)}
    for head in ("decode_head", "auxiliary_head"):
        if cfg.model.get(head) is not None:
            cfg.model[head]["num_classes"] = num_classes
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        if cfg.get(loader) is not None:
            cfg[loader]["dataset"]["data_root"] = spec.options["data_root"]
            if cfg[loader].get("num_workers", 0) == 0:
                cfg[loader]["persistent_workers"] = False
    if world_size == 1:
        _replace_norm(cfg.model, "SyncBN", "BN")
    ow = cfg.optim_wrapper
    if not on_gpu and ow.get("type") == "AmpOptimWrapper":
        ow["type"] = "OptimWrapper"
        for key in ("loss_scale", "dtype", "use_fsdp"):
            ow.pop(key, None)
    pw = ow.get("paramwise_cfg")
    if pw is not None and "num_layers" in pw and int(pw["num_layers"]) != int(arch["depth"]):
        raise ConfigError(f"{config_of(spec)}: optim_wrapper.paramwise_cfg.num_layers is {pw['num_layers']} "
                             f"but the backbone has {arch['depth']} blocks")
    cfg.work_dir = str(spec.folder)
    from maskalign.monitor import mmseg_tensorboard  # TensorBoard in the run folder

    mmseg_tensorboard(cfg, spec.folder)
    cfg.launcher = "pytorch" if world_size > 1 else "none"
    cfg.resume = not bool(spec.options.get("eval_only"))
    cfg.load_from = None
    if world_size > 1 and on_gpu:
        cfg.setdefault("env_cfg", {}).setdefault("dist_cfg", {})["backend"] = "nccl"
    return cfg


def write_backbone_init(state: dict, cfg: Any, path: Path) -> dict:
    """Convert the encoder for the config's backbone and write it where ``init_cfg`` points."""
    import torch

    from maskalign.atomic import atomic_torch_save
    from maskalign.segmentation.convert import to_mmseg_backbone

    bb = cfg.model.backbone
    size = bb["img_size"]
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    p = int(bb["patch_size"])
    converted = to_mmseg_backbone(state, grid=(h // p, w // p))
    atomic_torch_save({k: v.contiguous() for k, v in converted.items()}, path)
    return {k: torch.as_tensor(v) for k, v in converted.items()}


def _unwrap(model: Any) -> Any:
    return model.module if hasattr(model, "module") else model


def _final_val_metrics(runner: Any, tap: Any) -> dict[str, float] | None:
    """The metrics of the validation this process ran at the last iteration, if it did one.

    (A resumed run that was already finished validates nothing, and the message hub it restored
    may hold an older validation's numbers; then the caller runs the test loop instead.)
    """
    if tap.last is None or tap.last[0] != runner.max_iters:
        return None
    return tap.last[1]


def to_record_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    names = {"mIoU": Metric.MIOU, "aAcc": Metric.AACC, "mAcc": Metric.MACC}
    missing = [k for k in names if k not in metrics]
    if missing:
        raise RuntimeError(f"evaluation returned no {missing} (got {sorted(metrics)})")
    return {names[k]: float(metrics[k]) for k in names}


def newest_model_checkpoint(work_dir: Path) -> Path | None:
    last = work_dir / "last_checkpoint"
    if last.is_file():
        p = Path(last.read_text().strip())
        if p.is_file():
            return p
    iters = sorted(work_dir.glob("iter_*.pth"), key=lambda q: int(q.stem.split("_")[1]))
    return iters[-1] if iters else None


def run_job(ctx: RunContext) -> dict[str, Any]:
    """Train (or, with ``eval_only``, evaluate); returns the metrics and the model (the job writes the record)."""
    import torch

    from maskalign.distributed import init_distributed
    from maskalign.segmentation.convert import check_fits
    from maskalign.segmentation.datasets import num_classes
    from maskalign.segmentation.mmseg_import import import_mmseg

    import_mmseg()
    from mmengine.runner import Runner

    from maskalign.segmentation.hooks import ValMetricsTap

    spec = ctx.spec
    info = init_distributed("auto")
    if info.world_size > 1:
        # mmengine's DDP wrapper reads these; under SLURM only SLURM_* are set.
        os.environ.setdefault("LOCAL_RANK", str(info.local_rank))
        os.environ.setdefault("RANK", str(info.rank))
        os.environ.setdefault("WORLD_SIZE", str(info.world_size))
    source = ctx.source
    work = spec.folder
    work.mkdir(parents=True, exist_ok=True)
    cfg = load_seg_config(config_of(spec), spec.overrides)
    on_gpu = info.device.type == "cuda"
    init_path = None if bool(spec.options.get("eval_only")) else work / BACKBONE_INIT
    k = num_classes(spec.options["data_root"])
    prepare_config(cfg, spec, source.arch, k, info.world_size, on_gpu, init_path)
    from maskalign.segmentation.timm_backbone import fit_backbone  # registers the timm wrapper with mmseg

    source = ctx.source = fit_backbone(cfg, source)  # mmseg's ViT for plain ViTs, else the timm wrapper
    use_encoder_pixel_stats(cfg, source, spec.overrides)

    weights = None
    if bool(spec.options.get("eval_only")):
        weights = Path(spec.options.get("weights")) if spec.options.get("weights") else newest_model_checkpoint(work)
        if weights is None or not weights.is_file():
            raise UserError(f"{spec.options.get('weights') or work}: no finished model to evaluate "
                            "(train first, or pass --weights FILE)")
        cfg.load_from = str(weights)
        converted = None
    else:
        # Every rank converts the same tensors; only rank 0 writes the file, the others wait.
        if info.is_main:
            converted = write_backbone_init(source.state, cfg, init_path)
        if info.world_size > 1:
            torch.distributed.barrier()
        if not info.is_main:
            converted = load_weights(init_path)

    runner = Runner.from_cfg(cfg)
    tap = ValMetricsTap()
    runner.register_hook(tap)
    if converted is not None:
        check_fits(_unwrap(runner.model).backbone, converted, source=str(spec.ckpt))

    if bool(spec.options.get("eval_only")):
        metrics = runner.test()
    else:
        runner.train()
        metrics = _final_val_metrics(runner, tap) or runner.test()
        weights = newest_model_checkpoint(work)

    ctx.record_config = _record_config(cfg, spec, info.world_size, k)
    if bool(spec.options.get("eval_only")):
        # Re-evaluating this run's own model: keep the record's description of how it was trained.
        previous = _previous_record_config(work)
        if previous is not None:
            ctx.record_config = {**previous, "eval_only": True}
        ctx.record_config["evaluated_weights"] = str(weights)
    return {"work_dir": str(work), "metrics": to_record_metrics(metrics), "weights": str(weights) if weights else None,
            "checkpoint": str(weights) if weights else None}


def use_encoder_pixel_stats(cfg: Any, source: Any, overrides: tuple[str, ...]) -> None:
    """UperNet normalises pixels with the encoder's own mean and std (RGB, 0-255), unless the command
    line sets ``model.data_preprocessor.mean``/``std``."""
    from maskalign.transfer.data import encoder_preprocess

    if any(o.startswith(("model.data_preprocessor.mean=", "model.data_preprocessor.std=")) for o in overrides):
        return
    dp = cfg.model.data_preprocessor
    dp["mean"], dp["std"] = encoder_preprocess(source.meta).pixel_stats()
    top = cfg.get("data_preprocessor") if hasattr(cfg, "get") else None  # mmseg configs may repeat it
    if top is not None:
        top["mean"], top["std"] = dp["mean"], dp["std"]


def _previous_record_config(work: Path) -> dict[str, Any] | None:
    from maskalign.records import RECORD_FILENAME, DataError, read_record

    if not (work / RECORD_FILENAME).is_file():
        return None
    try:
        return dict(read_record(work / RECORD_FILENAME).config)
    except DataError:
        return None


def _record_config(cfg: Any, spec: JobSpec, world_size: int, k: int) -> dict[str, Any]:
    bb = cfg.model.backbone
    tl = cfg.train_dataloader
    opt = cfg.optim_wrapper
    return {
        "config": str(config_of(spec)), "overrides": list(spec.overrides),
        "data_root": spec.options["data_root"], "num_classes": k, "eval_only": bool(spec.options.get("eval_only")),
        "crop_size": list(cfg.model.data_preprocessor.get("size") or []),
        "pixel_mean": list(cfg.model.data_preprocessor.get("mean") or []),
        "pixel_std": list(cfg.model.data_preprocessor.get("std") or []),
        "backbone": {key: bb.get(key) for key in ("type", "img_size", "patch_size", "embed_dims", "num_layers",
                                                   "num_heads", "out_indices", "drop_path_rate", "init_values")},
        "max_iters": cfg.train_cfg.get("max_iters"), "batch_per_gpu": tl.get("batch_size"),
        "world_size": world_size, "total_batch": tl.get("batch_size", 0) * world_size,
        "optimizer": dict(opt.get("optimizer", {})), "optim_wrapper": opt.get("type"),
        "paramwise_cfg": dict(opt.get("paramwise_cfg") or {}),
        "test_cfg": dict(cfg.model.get("test_cfg") or {}),
        "resolved_config": str(spec.folder / config_of(spec).name),
    }

