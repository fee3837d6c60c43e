"""Evaluate a fine-tuned classifier on ImageNet-A, -R, -Sketch, -V2 and -C (default: the demo world's copies).

    python transfer/robustness.py --ckpt CKPT [--config NAME] [--output-dir ROOT] [--name RUN] [key=value ...]
                          [--local | --slurm ...]

Recipes live in maskalign/configs/robustness/; the job writes <output-dir>/robustness/<name>/ (record.json when
done). Flags and overrides go in any order. The task itself is ``maskalign.transfer.tasks``.
"""

from __future__ import annotations

import sys
from functools import partial

from maskalign.transfer import cli

TASK = "robustness"

# The get_args_parser/main pair every entry script exposes, bound to this task.
get_args_parser = partial(cli.get_args_parser, TASK)
main = partial(cli.main, TASK)

if __name__ == "__main__":
    sys.exit(cli.run(TASK))
