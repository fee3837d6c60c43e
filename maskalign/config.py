"""Layered configs: ``default.yaml`` <- experiment file(s) <- ``key=value`` overrides.

An experiment file states only what differs from its base (``base: other.yaml``; the chain ends at
the task's ``default.yaml``). The default is merged in struct mode, so a key that does not exist
anywhere is refused with one line naming the key and where it came from, instead of being
silently ignored. Every value must also have the type of its default (``optim.epochs=three`` is
refused before anything is built or written; an int is accepted where the default is a float;
a key whose default is ``null`` takes anything). The resolved config is saved beside every run's
outputs.

The suite's configs ship inside the package (``maskalign/configs/<kind>/``: ``pretrain``,
``sweeps``, ``finetune``, ``linprobe``, ``robustness``, ``coco``, ``ade20k``), so ``--config NAME``
works from a wheel as from a checkout; a user's own file is given by path. Outputs go under
``$MASKALIGN_OUTPUT``, else ``./output`` in the working directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from maskalign.errors import ConfigError

#: The configs shipped as package data, one folder per kind of job.
CONFIG_ROOT = Path(__file__).resolve().parent / "configs"
OUTPUT_ENV = "MASKALIGN_OUTPUT"


def flat_keys(d: Any, prefix: str = "") -> dict[str, Any]:
    """A nested plain config as ``{"optim.blr": 1.5e-4, ...}``: what comparisons of two configs walk."""
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(flat_keys(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def config_dir(kind: str) -> Path:
    """The shipped config folder of a kind of job (``pretrain``, ``finetune``, ``coco`` ...)."""
    return CONFIG_ROOT / kind


def default_output_root() -> str:
    """``$MASKALIGN_OUTPUT``, else ``output`` (relative to the working directory)."""
    return os.environ.get(OUTPUT_ENV) or "output"


def _load_yaml(path: Path) -> DictConfig:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        cfg = OmegaConf.load(path)
    except (OmegaConfBaseException, OSError, ValueError) as e:
        raise ConfigError(f"{path}: cannot parse YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"{path}: a config file must hold a mapping")
    return cfg


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean (true/false)"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple, ListConfig)):
        return "a list"
    return "a mapping"


def _fits(default: Any, value: Any) -> bool:
    """Whether ``value`` may replace ``default``: same kind of scalar or container (int for float)."""
    if default is None or value is None:
        return True
    if isinstance(value, str) and value.startswith("${"):  # an interpolation: checked once resolved
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, str):
        return isinstance(value, str)
    if isinstance(default, list):
        return isinstance(value, list)
    if isinstance(default, dict):
        return isinstance(value, dict)
    return True


def check_types(default: DictConfig, cfg: DictConfig, source: str) -> None:
    """Refuse, in one line naming ``source``, the key and the value, a value not of its default's type."""
    ref = OmegaConf.to_container(default, resolve=False)
    got = OmegaConf.to_container(cfg, resolve=False)

    def walk(d: Any, v: Any, key: str) -> None:
        if isinstance(d, dict) and isinstance(v, dict):
            for k, dv in d.items():
                if k in v:
                    walk(dv, v[k], f"{key}.{k}" if key else str(k))
            return
        if not _fits(d, v):
            raise ConfigError(f"{source}: {key}={v!r} is {_type_name(v)}, expected {_type_name(d)} "
                              f"(default {d!r})")

    walk(ref, got, "")


def _merge(base: DictConfig, update: DictConfig, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, update)
    except ConfigKeyError as e:
        key = getattr(e, "full_key", None) or str(e).splitlines()[0]
        raise ConfigError(f"{source}: unknown config key '{key}'") from None
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", "")
        raise ConfigError(f"{source}: bad value for '{key}' ({str(e).splitlines()[0]})") from None


def find_config_file(name: str | Path, folder: Path, suffix: str) -> Path | None:
    """``name`` as a path, else as a name (with or without ``suffix``) inside ``folder``.

    A path into the source tree's old config folders (``pretrain/configs/x.yaml``,
    ``detectron_configs/x.py``) that no longer exists is found by its file name in ``folder``.
    """
    p = Path(name)
    if p.is_file():
        return p
    for cand in (folder / p, folder / f"{p}{suffix}", folder / p.name, folder / f"{p.name}{suffix}"):
        if cand.is_file():
            return cand
    return None


def resolve_config_path(name: str | Path, config_dir: Path) -> Path:
    """A config given by path, or by name (with or without ``.yaml``) inside ``config_dir``."""
    found = find_config_file(name, config_dir, ".yaml")
    if found is None:
        known = ", ".join(sorted(c.stem for c in config_dir.glob("*.yaml")))
        raise ConfigError(f"config {str(name)!r} not found (looked in {config_dir}; known: {known})")
    return found


def load_config(config: str | Path | None, overrides: list[str] | None, config_dir: Path) -> DictConfig:
    """Resolve ``config_dir/default.yaml`` <- base chain of ``config`` <- ``overrides``."""
    default = _load_yaml(config_dir / "default.yaml")
    OmegaConf.set_struct(default, True)
    chain: list[Path] = []
    path = resolve_config_path(config, config_dir) if config else None
    while path is not None and path.resolve() != (config_dir / "default.yaml").resolve():
        if path in chain:
            raise ConfigError(f"{path}: circular 'base:' chain")
        chain.append(path)
        base = _load_yaml(path).get("base")
        path = resolve_config_path(base, path.parent) if base else None
    cfg = default
    for p in reversed(chain):
        layer = _load_yaml(p)
        layer.pop("base", None)
        cfg = _merge(cfg, layer, str(p))
        check_types(default, cfg, str(p))
    if overrides:
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise ConfigError(f"command line: override {bad[0]!r} is not of the form key=value")
        try:
            dot = OmegaConf.from_dotlist(list(overrides))
        except OmegaConfBaseException as e:
            raise ConfigError(f"command line: cannot parse overrides ({str(e).splitlines()[0]})") from None
        cfg = _merge(cfg, dot, "command line")
        check_types(default, cfg, "command line")
    if not cfg.get("name"):
        cfg.name = chain[0].stem if chain else "default"
    return cfg


def to_plain(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def save_config(cfg: DictConfig, path: Path) -> None:
    from maskalign.atomic import atomic_write_text

    atomic_write_text(path, OmegaConf.to_yaml(cfg, resolve=True))
