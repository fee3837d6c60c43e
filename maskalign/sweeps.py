"""Sweep files: one base config and named runs, each a list of ``key=value`` overrides.

::

    base: maskalign_vitb16_clipb16_200ep      # a config path, or a name in the task's config folder
    runs:
      - name: table3-dynamic-top1               # the run folder: OUTPUT/<kind>/<name>/
        overrides: [align.type=dynamic, align.top_k=1]
      - name: table3-dynamic-top3
        overrides: [align.type=dynamic, align.top_k=3]

The launcher submits a sweep as one SLURM job array (or runs it here, run after run).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from maskalign.config import ConfigError

_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_KEYS = {"base", "runs", "name", "description"}


@dataclass(frozen=True)
class SweepRun:
    name: str
    overrides: tuple[str, ...]


@dataclass(frozen=True)
class Sweep:
    name: str
    base: str
    runs: tuple[SweepRun, ...]
    path: Path

    def base_path(self, config_dir: Path) -> str:
        """``base`` as a name of ``config_dir``, else as a path relative to the sweep file."""
        if (config_dir / self.base).is_file() or (config_dir / f"{self.base}.yaml").is_file():
            return self.base
        beside = self.path.parent / self.base
        for cand in (beside, beside.with_name(beside.name + ".yaml")):
            if cand.is_file():
                return str(cand)
        return self.base  # the config loader names what it looked for


def load_sweep(path: str | Path) -> Sweep:
    """Read and check a sweep file; every problem is one ``ConfigError`` line naming the file."""
    import yaml
    from omegaconf import DictConfig, ListConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep file not found: {path}")
    try:
        data = OmegaConf.load(path)
    except (OmegaConfBaseException, OSError, ValueError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot parse YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, DictConfig):
        raise ConfigError(f"{path}: a sweep file holds a mapping with 'base' and 'runs'")
    unknown = sorted(set(data.keys()) - _KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown}; a sweep has {sorted(_KEYS)}")
    base = data.get("base")
    if not base or not isinstance(base, str):
        raise ConfigError(f"{path}: 'base' (the config every run starts from) is missing")
    runs = data.get("runs")
    if not isinstance(runs, ListConfig) or len(runs) == 0:
        raise ConfigError(f"{path}: 'runs' must be a non-empty list of {{name:, overrides: [k=v, ...]}}")
    out, seen = [], set()
    for i, run in enumerate(runs):
        if not isinstance(run, DictConfig) or not run.get("name"):
            raise ConfigError(f"{path}: run {i} has no 'name'")
        name = str(run.name)
        if not _RUN_NAME.match(name):
            raise ConfigError(f"{path}: run name {name!r} is not a folder name (letters, digits, . _ + -)")
        if name in seen:
            raise ConfigError(f"{path}: run name {name!r} appears twice")
        seen.add(name)
        extra = sorted(set(run.keys()) - {"name", "overrides"})
        if extra:
            raise ConfigError(f"{path}: run {name!r}: unknown key(s) {extra}; a run has name and overrides")
        overrides = run.get("overrides")
        if overrides is None:
            overrides = []
        if not isinstance(overrides, (ListConfig, list)):
            raise ConfigError(f"{path}: run {name!r}: 'overrides' must be a list of key=value strings")
        items = [str(o) for o in overrides]
        bad = [o for o in items if "=" not in o]
        if bad:
            raise ConfigError(f"{path}: run {name!r}: override {bad[0]!r} is not of the form key=value")
        out.append(SweepRun(name, tuple(items)))
    return Sweep(name=str(data.get("name") or path.stem), base=str(base), runs=tuple(out), path=path)
