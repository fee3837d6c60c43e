"""Evaluate encoders: every chosen protocol for every ``--ckpt``, then one table with a row per encoder.

    python transfer/evaluate.py --ckpt A [--ckpt B ...] [--protocols finetune,linprobe,robustness]
                                [--output-dir ROOT] [--stage-args PROTOCOL='ARGS' ...] [--local | --slurm ...]

Here the runs go one after another; on SLURM each encoder x protocol is a job of its own (robustness
after its fine-tune). Running it again runs only what is missing or failed. See ``maskalign.evaluate``.
"""

from __future__ import annotations

import sys

from maskalign.evaluate import get_args_parser, main, run

__all__ = ["get_args_parser", "main"]

if __name__ == "__main__":
    sys.exit(run())
