"""Fine-tune a pre-trained ViT on ImageNet-1k (default: the demo world): the MAE/BEiT recipe of MaskAlign section 4.1.

    python transfer/finetune.py --ckpt CKPT [--config NAME] [--output-dir ROOT] [--name RUN] [key=value ...]
                          [--local | --slurm ...]

Recipes live in maskalign/configs/finetune/; the job writes <output-dir>/finetune/<name>/ (record.json when
done). Flags and overrides go in any order. The task itself is ``maskalign.transfer.tasks``.
"""

from __future__ import annotations

import argparse
import sys

from maskalign.transfer import cli

TASK = "finetune"


def get_args_parser(description: str | None = None, parents: list[argparse.ArgumentParser] | None = None,
                    add_help: bool = True) -> argparse.ArgumentParser:
    return cli.get_args_parser(TASK, description, parents=parents, add_help=add_help)


def main(args: argparse.Namespace) -> int:
    return cli.main(TASK, args)


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_intermixed_args()))
