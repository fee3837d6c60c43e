"""COCO detection and instance segmentation with ViTDet Mask R-CNN on detectron2.

    python transfer/coco_vitdet.py --ckpt CKPT [--config-file detectron_configs/...] [--eval-only]
                                   [--data DIR] [key=value ...] [launcher flags]

With no ``--config-file`` and no ``--data`` it trains the tiny demo config on the demo world's
COCO copy on this machine. Real runs: ``--config-file mask_rcnn_vitdet_b_25ep_maskalign --data
$DETECTRON2_DATASETS`` (SLURM is used when present; ``--local`` runs here). Running the same
command again resumes from the output folder's last checkpoint. See docs/coco.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from maskalign.errors import UserError  # noqa: E402
from maskalign.launcher import get_args_parser as launcher_parser  # noqa: E402
from maskalign.launcher import launch  # noqa: E402


def get_args_parser(
    description: str | None = None,
    parents: list[argparse.ArgumentParser] | None = None,
    add_help: bool = True,
) -> argparse.ArgumentParser:
    p = launcher_parser(
        description or "COCO box/mask AP of a pre-trained ViT with ViTDet Mask R-CNN (detectron2)",
        parents=parents,
        add_help=add_help,
    )
    p.add_argument(
        "--ckpt", required=True, help="pre-trained encoder: encoder.pth, checkpoint.pth or an MAE-style file"
    )
    p.add_argument(
        "--config-file",
        dest="config_file",
        default=None,
        help="a file or name in detectron_configs/ (default: mask_rcnn_vitdet_tiny_demo)",
    )
    p.add_argument(
        "--data",
        default=None,
        help="folder holding coco/ (or a COCO folder itself), or 'demo'; default: $DETECTRON2_DATASETS "
        "if set, else the demo world's COCO copy",
    )
    p.add_argument(
        "--output-dir",
        dest="output_dir",
        default=None,
        help="default: output/coco/<config>--<checkpoint folder>",
    )
    p.add_argument("--name", default=None, help="run name (the output folder's name)")
    p.add_argument(
        "--eval-only",
        dest="eval_only",
        action="store_true",
        help="evaluate the trained detector in the output folder (or --weights) without training",
    )
    p.add_argument(
        "--weights", default=None, help="with --eval-only: a detectron2 checkpoint of the detector"
    )
    p.add_argument(
        "--no-resume",
        dest="resume",
        action="store_false",
        help="start from the pre-trained encoder even if the output folder holds a checkpoint",
    )
    p.add_argument(
        "overrides", nargs="*", help="LazyConfig overrides, e.g. train.max_iter=20 optimizer.lr=1e-4"
    )
    return p


def main(args: argparse.Namespace) -> int:
    from maskalign.detection.task import CocoTask
    from maskalign.detection.train import JobOptions, output_dir

    opts = JobOptions(
        ckpt=args.ckpt,
        config_file=args.config_file,
        overrides=list(args.overrides),
        data=args.data,
        output_dir=args.output_dir,
        name=args.name,
        eval_only=args.eval_only,
        weights=args.weights,
        resume=args.resume,
    )
    try:
        # What can be checked without detectron2 is checked before anything is submitted.
        from maskalign.detection import configs, datasets
        from maskalign.transfer.source import load_pretrained

        load_pretrained(opts.ckpt)
        if opts.data not in (None, datasets.DEMO):
            datasets.resolve_source(opts.data)
        configs.resolve_config_file(opts.config_file)
        out = output_dir(opts)
        result = launch(CocoTask(opts), args, out, f"coco:{out.name}")
    except (UserError, FloatingPointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if isinstance(result, dict) and "metrics" in result:
        m, nan = result["metrics"], float("nan")
        print(
            f"\nDone. box AP {m.get('ap_box', nan):.2f}, mask AP {m.get('ap_mask', nan):.2f}\n"
            f"Record: {result.get('record')}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
