"""Attentive probing of a frozen pre-trained ViT on ImageNet-1k (default: the demo world): V-JEPA's pooler.

    python transfer/attentive.py --ckpt CKPT [--config NAME] [--output-dir ROOT] [--name RUN] [key=value ...]
                           [--local | --slurm ...]

Recipes live in maskalign/configs/attentive/ (``--config vjepa_in1k`` for ImageNet-1K); the job writes
<output-dir>/attentive/<name>/ (record.json when done). The task itself is
``maskalign.transfer.frozen_tasks``.
"""

from __future__ import annotations

import sys
from functools import partial

from maskalign.transfer import cli

TASK = "attentive"

# The get_args_parser/main pair every entry script exposes, bound to this task.
get_args_parser = partial(cli.get_args_parser, TASK)
main = partial(cli.main, TASK)

if __name__ == "__main__":
    sys.exit(cli.run(TASK))
