"""Which encoder and which config a transfer run folder belongs to, so that no folder mixes two.

A transfer run is identified by its *source* -- the checkpoint file's sha256 (its path is kept
only to name it), or the hub name (``timm:...``, ``open_clip:...``) -- and its *config* (the
resolved task config without the settings that may change between starts of one run: its name,
output root, runtime and logging). The identity is written to ``<run folder>/identity.json`` when
the run starts and checked before anything is written: a folder resumes, re-runs or re-records only
the run of the same source and config; anything else is refused in one line naming both. A folder
made before identities were stored is checked against the source its ``record.json`` names.

The default run name is built from the source too (:func:`source_name`): a file's stem (its folder
and stem when the stem says nothing, like ``checkpoint``), the hub name, or the run a checkpoint
of this project came from; when that name's folder already holds another source, the name gets
the first eight hex digits of the file's sha256 (:func:`unique_run_name`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from maskalign.atomic import atomic_write_text
from maskalign.config import flat_keys
from maskalign.distributed import process_env
from maskalign.errors import RunFolderError
from maskalign.records import RECORD_FILENAME, file_sha256
from maskalign.tasks.spec import run_folder

IDENTITY_FILENAME = "identity.json"
#: Config keys that may differ between starts of the same run (where it writes, how it runs).
VOLATILE_KEYS = ("name", "output_dir", "runtime", "logging", "ckpt")
#: File stems that say nothing about the encoder: the folder name goes in front of them.
#: How long a run is: a finished run may be continued further under the same folder (resumed, not restarted).
LENGTH_KEYS = ("optim.epochs", "train_cfg.max_iters", "train.max_iter", "runtime.max_steps")
GENERIC_STEMS = {"checkpoint", "checkpoint-best", "checkpoint-last", "encoder", "model", "pytorch_model",
                 "open_clip_pytorch_model", "weights", "last", "best", "final", "model_final"}

_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "run"


def _sha256(path: Path) -> str:
    """The file's sha256, read once per process for an unchanged file (a 1 GB file takes seconds)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = file_sha256(path)
    return _SHA_CACHE[key]


def source_identity(ckpt: str | Path) -> dict[str, str]:
    """``{"hub": spec}`` for a hub name, ``{"sha256": ..., "path": ...}`` for a file (options after ``#`` kept)."""
    from maskalign.encoders.source_spec import parse_spec

    spec = parse_spec(str(ckpt))
    if spec.kind != "file":
        return {"hub": spec.text}
    return {"sha256": _sha256(spec.path), "path": str(spec.path.resolve()), **source_options(spec.text)}


def source_options(text: str) -> dict[str, str]:
    """``{"options": "k=v,..."}`` for a file spec read with options after ``#`` (they change the encoder)."""
    from maskalign.encoders.source_spec import parse_spec

    spec = parse_spec(text)
    if spec.kind != "file" or not spec.options:
        return {}
    return {"options": ",".join(f"{k}={v}" for k, v in sorted(spec.options.items()))}


def same_source(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two sources are the same encoder: the same file content (and options), or the same hub name."""
    if a.get("sha256") or b.get("sha256"):
        return a.get("sha256") == b.get("sha256") and a.get("options") == b.get("options")
    return bool(a.get("hub")) and a.get("hub") == b.get("hub")


def describe_source(source: dict[str, Any]) -> str:
    """How a message names a source: ``path (sha256 1a2b3c4d)`` or the hub name."""
    if source.get("sha256"):
        where = source.get("path") or "a file"
        return f"{where} (sha256 {str(source['sha256'])[:8]})"
    return str(source.get("hub") or source.get("path") or "an unknown source")


def source_name(ckpt: str | Path, meta: dict[str, Any] | None = None) -> str:
    """The readable name of a source in run names: this project's run, the hub name, the file's stem."""
    from maskalign.encoders.source_spec import parse_spec

    meta = meta or {}
    if meta.get("run"):
        return _safe(str(meta["run"]))
    spec = parse_spec(str(ckpt))
    if spec.kind != "file":
        return _safe(spec.target)
    stem = spec.path.name
    for suffix in (".safetensors", ".pth.tar", ".pth", ".pt", ".bin", ".ckpt", ".npz"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    if stem.lower() in GENERIC_STEMS:
        parent = spec.path.resolve().parent.name
        stem = f"{parent}-{stem}" if parent else stem
    return _safe(stem)


def config_stem(config: str | Path | None, default_config: str) -> str:
    return Path(str(config or default_config)).stem


def default_run_name(source: str, config: str | Path | None, default_config: str) -> str:
    """``<source>-<config stem>``; a source that already ends with that stem (a run of the same
    config upstream, e.g. robustness after ``X-default``) is not given it twice."""
    stem = config_stem(config, default_config)
    if source == stem or source.endswith(f"-{stem}"):
        return source
    return f"{source}-{stem}"


def config_identity(resolved: dict[str, Any] | None, config: str | None, config_path: str | None,
                    overrides: tuple[str, ...] | list[str], free: tuple[str, ...] = ()) -> dict[str, Any]:
    """The part of a run's config that defines it: the resolved config without :data:`VOLATILE_KEYS`
    and the task's ``free`` sections (:attr:`Task.rerun_keys`), else (a task whose engine resolves it
    later) the config file's name and the overrides."""
    volatile = (*VOLATILE_KEYS, *free)
    if resolved is not None:
        kept = {k: v for k, v in resolved.items() if k not in volatile}
        if isinstance(kept.get("data"), dict):  # how the data is read, not which data
            kept["data"] = {k: v for k, v in kept["data"].items() if k not in ("num_workers", "decode")}
        if isinstance(kept.get("optim"), dict):
            kept["optim"] = {k: v for k, v in kept["optim"].items() if f"optim.{k}" not in LENGTH_KEYS}
        return kept
    kept = sorted(o for o in overrides if o.split("=", 1)[0].split(".")[0] not in volatile
                  and o.split("=", 1)[0].lstrip("+") not in LENGTH_KEYS)
    return {"config": Path(str(config_path or config or "default")).name, "overrides": kept}


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    a, b = flat_keys(old), flat_keys(new)
    return [f"{k}: {a.get(k, '(none)')!r} -> {b.get(k, '(none)')!r}" for k in sorted(set(a) | set(b))
            if a.get(k, "(none)") != b.get(k, "(none)")]


def stored_identity(folder: str | Path) -> dict[str, Any] | None:
    """The identity a run folder holds: ``identity.json``, else the source its ``record.json`` names."""
    folder = Path(folder)
    path = folder / IDENTITY_FILENAME
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise RunFolderError(f"{path}: unreadable run identity ({e}); delete the folder to start over") from None
        return data if isinstance(data, dict) else None
    record = folder / RECORD_FILENAME
    if record.is_file():
        try:
            data = json.loads(record.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        src = data.get("source_checkpoint") if isinstance(data, dict) else None
        if isinstance(src, dict) and (src.get("sha256") or src.get("hub")):
            source = {k: src[k] for k in ("sha256", "path", "hub") if k in src}
            if source.get("sha256") and src.get("spec"):  # the options the file was read with
                source.update({k: v for k, v in source_options(str(src["spec"])).items()})
            return {"source": source, "legacy": True}
    return None


def identity_of(spec: Any, free: tuple[str, ...] = ()) -> dict[str, Any]:
    """The identity of a :class:`~maskalign.tasks.spec.JobSpec` whose checkpoint is known (``free``:
    its task's :attr:`~maskalign.tasks.registry.Task.rerun_keys`)."""
    identity = {"task": spec.task, "source": source_identity(spec.ckpt),
                "config": config_identity(spec.resolved, spec.config, spec.config_path, spec.overrides, free)}
    if spec.options.get("eval_only"):  # re-evaluating a run's own model: its training settings do not apply
        identity["eval_only"] = True
    return identity


def check_identity(folder: str | Path, identity: dict[str, Any]) -> None:
    """Refuse (one line) when ``folder`` holds a run of another source or config than ``identity``."""
    folder = Path(folder)
    old = stored_identity(folder)
    if old is None:
        return
    run = f"{folder.parent.name}/{folder.name}"
    if not same_source(old.get("source") or {}, identity["source"]):
        raise RunFolderError(
            f"{folder}: run {run} belongs to {describe_source(old.get('source') or {})}, not to "
            f"{describe_source(identity['source'])}; give this encoder its own --name (or leave --name out)")
    if old.get("legacy") or "config" not in old or identity.get("eval_only"):
        return
    changes = config_changes(old["config"], identity["config"])
    if changes:
        shown = "; ".join(changes[:3]) + (f" (+{len(changes) - 3} more)" if len(changes) > 3 else "")
        raise RunFolderError(f"{folder}: run {run} was started with another config ({shown}); "
                               f"give this config its own --name, or delete the folder to start over")


def claim(folder: str | Path, identity: dict[str, Any]) -> None:
    """Check ``folder`` against ``identity``, then store it there (rank 0; atomically) for later starts."""
    check_identity(folder, identity)
    if process_env().rank != 0:
        return
    folder = Path(folder)
    path = folder / IDENTITY_FILENAME
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(identity, indent=2, sort_keys=True, default=str) + "\n")


def unique_run_name(output_root: str | Path, task: str, source: str, config: str | Path | None,
                    default_config: str, identity: dict[str, Any]) -> str:
    """:func:`default_run_name` of ``source``; when that folder holds another file, the source name
    gets the file's short sha256 (``stem-1a2b3c4d-default``), so two files never share a run."""
    name = default_run_name(source, config, default_config)
    old = stored_identity(run_folder(output_root, task, name))
    if old is None or same_source(old.get("source") or {}, identity) or not identity.get("sha256"):
        return name
    return default_run_name(f"{source}-{str(identity['sha256'])[:8]}", config, default_config)
