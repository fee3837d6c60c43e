"""Fine-tune a pre-trained ViT on ImageNet-1k (default: the demo world): the MAE/BEiT recipe of MaskAlign section 4.1.

    python transfer/finetune.py --ckpt CKPT [--config NAME] [key=value ...] [--local | --slurm ...]

Recipes live in transfer/configs/finetune/; the job writes <output_dir>/finetune/<name>/ (record.json when done).
"""

from __future__ import annotations

import sys

from maskalign.transfer.cli import get_args_parser as _parser
from maskalign.transfer.cli import main as _main

TASK = "finetune"


def get_args_parser(description: str | None = None, parents=None, add_help: bool = True):
    return _parser(TASK, description or __doc__.splitlines()[0], parents=parents, add_help=add_help)


def main(args) -> int:
    return _main(TASK, args)


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
