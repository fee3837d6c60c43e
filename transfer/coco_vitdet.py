"""COCO detection and instance segmentation with ViTDet Mask R-CNN on detectron2.

    python transfer/coco_vitdet.py --ckpt CKPT [--config NAME|FILE] [--eval-only] [--data DIR]
                                   [--output-dir ROOT] [--name RUN] [key=value ...] [launcher flags]

With no ``--config`` (alias ``--config-file``) and no ``--data`` it trains the tiny demo config on
the demo world's COCO copy on this machine. Real runs: ``--config mask_rcnn_vitdet_b_25ep_maskalign
--data $DETECTRON2_DATASETS`` (SLURM is used when present; ``--local`` runs here). The run writes
``ROOT/coco/RUN/``; running the same command again resumes from its last checkpoint. Configs live
in detectron_configs/. See docs/coco.md.
"""

from __future__ import annotations

import sys
from functools import partial

from maskalign.transfer import cli

TASK = "coco"

# The get_args_parser/main pair every entry script exposes, bound to this task.
get_args_parser = partial(cli.get_args_parser, TASK)
main = partial(cli.main, TASK)

if __name__ == "__main__":
    sys.exit(cli.run(TASK))
