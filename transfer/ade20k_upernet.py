"""ADE20K semantic segmentation with UperNet on mmsegmentation, from a pre-trained encoder.

    python transfer/ade20k_upernet.py --ckpt CKPT [--config NAME|FILE] [--data DIR] [key=value ...]
    python transfer/ade20k_upernet.py --ckpt CKPT --eval-only [--weights FILE] ...

Without ``--data`` it runs on the demo world's ADE20K copy; ``--data`` points at a real
``ADEChallengeData2016`` tree. The default config is the demo one (``upernet_vit_tiny_demo_128``);
the paper's is ``--config upernet_vit_b16_ade20k_512_160k`` (8 GPUs); configs live in
maskalign/configs/ade20k/. The run writes ``<output-dir>/ade20k/<name>/``. With SLURM present the
job is submitted (``--local`` runs here). See docs/ade20k.md.
"""

from __future__ import annotations

import sys
from functools import partial

from maskalign.transfer import cli

TASK = "ade20k"

# The get_args_parser/main pair every entry script exposes, bound to this task.
get_args_parser = partial(cli.get_args_parser, TASK)
main = partial(cli.main, TASK)

if __name__ == "__main__":
    sys.exit(cli.run(TASK))
