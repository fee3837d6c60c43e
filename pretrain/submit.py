"""Launch pre-training: ``python pretrain/submit.py [CONFIG] [key=value ...] [cluster flags]``.

With no arguments it runs the built-in default (a tiny MaskAlign student on the demo world) on
this machine. With SLURM present the job is submitted (``--local`` runs here anyway).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from maskalign.config import load_config, to_plain  # noqa: E402
from maskalign.errors import UserError  # noqa: E402
from maskalign.launcher import get_args_parser as launcher_parser  # noqa: E402
from maskalign.launcher import launch  # noqa: E402

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def get_args_parser(add_help: bool = True):
    p = launcher_parser("MaskAlign-suite pre-training", add_help=add_help)
    p.add_argument("config", nargs="?", default=None,
                   help=f"experiment config: a path or a name in {CONFIG_DIR} (default: the demo default)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. optim.epochs=10 mask.ratio=0.5")
    return p


def main(args) -> int:
    from main import PretrainTask

    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config:  # only overrides were given
        config, overrides = None, [config, *overrides]
    try:
        cfg = load_config(config, overrides, CONFIG_DIR)
        out = Path(cfg.output_dir) / "pretrain" / cfg.name
        result = launch(PretrainTask(to_plain(cfg)), args, out, f"pretrain:{cfg.name}")
    except (UserError, FloatingPointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if isinstance(result, dict) and "encoder" in result:
        print(f"\nDone. Encoder checkpoint: {result['encoder']}\n"
              f"Resume state: {Path(result['out_dir']) / 'checkpoint.pth'}\n"
              f"Next: python transfer/finetune.py --ckpt {result['encoder']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
