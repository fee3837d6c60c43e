"""Linear probing of a frozen pre-trained ViT on ImageNet-1k (default: the demo world):
MAE's recipe (BN + linear head, LARS).

    python transfer/linprobe.py --ckpt CKPT [--config NAME] [--output-dir ROOT] [--name RUN] [key=value ...]
                          [--local | --slurm ...]

Recipes live in maskalign/configs/linprobe/; the job writes <output-dir>/linprobe/<name>/ (record.json when
done). Flags and overrides go in any order. The task itself is ``maskalign.transfer.tasks``.
"""

from __future__ import annotations

import argparse
import sys

from maskalign.transfer import cli

TASK = "linprobe"


def get_args_parser(description: str | None = None, parents: list[argparse.ArgumentParser] | None = None,
                    add_help: bool = True) -> argparse.ArgumentParser:
    return cli.get_args_parser(TASK, description, parents=parents, add_help=add_help)


def main(args: argparse.Namespace) -> int:
    return cli.main(TASK, args)


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_intermixed_args()))
