"""The loading report: every tensor of a file is used, or dropped for a stated reason.

A silently dropped tensor gives a different network and plausible, wrong numbers, so the loader
accounts for each key of the file: the groups it put into the model (after the family's
converter renamed them) and the groups it left out on purpose, each with its reason (decoders,
teachers, heads, mask tokens, text towers...). A key in neither is an error, raised by the loader
with the first such keys named.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

_BLOCK = re.compile(r"^(.*?blocks)\.\d+\.")


def group_of(key: str) -> str:
    """``blocks.3.attn.qkv.weight`` -> ``blocks.*``, ``clip_model.visual.x`` -> ``clip_model.*``,
    ``norm.weight`` -> ``norm``; CLIP's ``visual.`` keeps one more level (``visual.conv1``)."""
    m = _BLOCK.match(key)
    if m:
        return m.group(1) + ".*"
    parts = key.split(".")
    head = 2 if parts[0] == "visual" else 1
    if len(parts) <= head:
        return key
    if len(parts) == head + 1 and parts[-1] in ("weight", "bias"):
        return ".".join(parts[:head])
    return ".".join(parts[:head]) + ".*"


def describe_keys(keys: list[str], limit: int = 4) -> str:
    """``blocks 2,5`` then the first other keys, so that a long list stays one readable line."""
    blocks = sorted({int(m.group(1)) for k in keys if (m := re.match(r"blocks\.(\d+)\.", k))})
    other = sorted(k for k in keys if not k.startswith("blocks."))
    parts = [f"blocks {','.join(map(str, blocks))}"] if blocks else []
    return ", ".join(parts + other[:limit]) + (f" (+{len(other) - limit} more)" if len(other) > limit else "")


@dataclass
class LoadingReport:
    """What went into the model and what was left out.

    Args:
        used: tensor count per group of the model's own key names.
        dropped: per group of the file's key names, ``(count, reason)``.
        notes: conversions applied (renames, position-table resize), one phrase each.
    """

    used: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, tuple[int, str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add_used(self, keys: list[str]) -> None:
        for g, n in Counter(group_of(k) for k in keys).items():
            self.used[g] = self.used.get(g, 0) + n

    def add_dropped(self, keys: list[str], reason: str) -> None:
        for g, n in Counter(group_of(k) for k in keys).items():
            old = self.dropped.get(g, (0, reason))[0]
            self.dropped[g] = (old + n, reason)

    @property
    def n_used(self) -> int:
        return sum(self.used.values())

    @property
    def n_dropped(self) -> int:
        return sum(n for n, _ in self.dropped.values())

    def lines(self) -> list[str]:
        """Human-readable, a few lines: used groups on one line, one line per dropped reason."""
        out = [f"used {self.n_used} tensors: " + ", ".join(f"{g} ({n})" for g, n in sorted(self.used.items()))]
        by_reason: dict[str, list[str]] = {}
        for g, (n, reason) in sorted(self.dropped.items()):
            by_reason.setdefault(reason, []).append(f"{g} ({n})")
        for reason, groups in by_reason.items():
            out.append(f"dropped ({reason}): {', '.join(groups)}")
        if not self.dropped:
            out.append("dropped: nothing")
        out += [f"note: {n}" for n in self.notes]
        return out

    def summary(self) -> str:
        return "; ".join(self.lines())

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for a job's record."""
        return {"used": dict(sorted(self.used.items())),
                "dropped": {g: {"tensors": n, "reason": r} for g, (n, r) in sorted(self.dropped.items())},
                "notes": list(self.notes)}
