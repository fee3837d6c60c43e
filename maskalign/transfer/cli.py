"""The command line shared by ``transfer/finetune.py``, ``linprobe.py`` and ``robustness.py``.

``--ckpt CKPT [--config NAME] [key=value ...] [launcher flags]``: the config is
``transfer/configs/<task>/default.yaml`` <- ``NAME`` <- overrides. The checkpoint is read before
anything is launched, so a wrong file fails here, in one line, not in a queued job. Errors meant
for the user (``UserError``) are printed as one line on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from maskalign.config import REPO_ROOT, load_config, to_plain
from maskalign.errors import UserError
from maskalign.launcher import get_args_parser as launcher_parser
from maskalign.launcher import launch

CONFIG_ROOT = REPO_ROOT / "transfer" / "configs"


def get_args_parser(task: str, description: str | None = None,
                    parents: list[argparse.ArgumentParser] | None = None, add_help: bool = True) -> argparse.ArgumentParser:
    p = launcher_parser(description, parents=parents, add_help=add_help)
    what = "a fine-tuned classifier (transfer/finetune.py's checkpoint.pth or checkpoint-best.pth)" \
        if task == "robustness" else "a pre-training checkpoint (encoder.pth, checkpoint.pth, MAE-style .pth)"
    p.add_argument("--ckpt", required=True, help=what)
    p.add_argument("--config", default=None,
                   help=f"recipe: a path or a name in {CONFIG_ROOT / task} (default: the demo-world default)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. optim.epochs=5 data.root=/data/imagenet")
    return p


def _explicit_name(overrides: list[str]) -> str | None:
    for o in overrides:
        if o.startswith("name="):
            return o.split("=", 1)[1] or None
    return None


def _source_identity(task: str, ckpt: str) -> tuple[dict[str, Any], str]:
    """Validate the checkpoint now; return its metadata and the run it came from."""
    if task == "robustness":
        from maskalign.transfer.classifier import load_classifier

        _, info = load_classifier(ckpt)
        return info.get("meta") or {}, str(info.get("run") or Path(ckpt).resolve().parent.name)
    from maskalign.transfer.source import load_pretrained

    src = load_pretrained(ckpt)
    return src.meta, str(src.meta.get("run") or Path(ckpt).resolve().parent.name)


def main(task: str, args: argparse.Namespace) -> int:
    from maskalign.transfer.tasks import TransferTask

    config_dir = CONFIG_ROOT / task
    overrides = list(args.overrides)
    try:
        cfg = load_config(args.config, overrides, config_dir)
        _, source_run = _source_identity(task, args.ckpt)
        config_name = Path(args.config).stem if args.config else "default"
        cfg.name = _explicit_name(overrides) or f"{source_run}-{config_name}"
        out = Path(str(cfg.output_dir)) / task / cfg.name
        result = launch(TransferTask(task, to_plain(cfg), str(args.ckpt)), args, out, f"{task}:{cfg.name}")
    except (UserError, FloatingPointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if isinstance(result, dict) and "metrics" in result:
        shown = ", ".join(f"{k} {v:.2f}" for k, v in result["metrics"].items()
                          if isinstance(v, float) and "/" not in k)
        print(f"\nDone: {shown}\nRecord: {Path(result['out_dir']) / 'record.json'}")
        if task == "finetune":
            print(f"Next: python transfer/robustness.py --ckpt {result['checkpoint']}")
    return 0
