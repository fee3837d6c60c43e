"""COCO detection and instance segmentation with ViTDet Mask R-CNN on detectron2.

    python transfer/coco_vitdet.py --ckpt CKPT [--config NAME|FILE] [--eval-only] [--data DIR]
                                   [--output-dir ROOT] [--name RUN] [key=value ...] [launcher flags]

With no ``--config`` (alias ``--config-file``) and no ``--data`` it trains the tiny demo config on
the demo world's COCO copy on this machine. Real runs: ``--config mask_rcnn_vitdet_b_25ep_maskalign
--data $DETECTRON2_DATASETS`` (SLURM is used when present; ``--local`` runs here). The run writes
``ROOT/coco/RUN/``; running the same command again resumes from its last checkpoint. Configs live
in maskalign/configs/coco/. See docs/coco.md.
"""

from __future__ import annotations

import argparse
import sys

from maskalign.transfer import cli

TASK = "coco"


def get_args_parser(description: str | None = None, parents: list[argparse.ArgumentParser] | None = None,
                    add_help: bool = True) -> argparse.ArgumentParser:
    return cli.get_args_parser(TASK, description, parents=parents, add_help=add_help)


def main(args: argparse.Namespace) -> int:
    return cli.main(TASK, args)


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_intermixed_args()))
