"""ADE20K semantic segmentation with UperNet on mmsegmentation, from a pre-trained encoder.

    python transfer/ade20k_upernet.py --ckpt CKPT [--config NAME|FILE] [--data DIR] [key=value ...]
    python transfer/ade20k_upernet.py --ckpt CKPT --eval-only [--weights FILE] ...

Without ``--data`` it runs on the demo world's ADE20K copy; ``--data`` points at a real
``ADEChallengeData2016`` tree. The default config is the demo one (``upernet_vit_tiny_demo_128``);
the paper's is ``--config upernet_vit_b16_ade20k_512_160k`` (8 GPUs). With SLURM present the job is
submitted (``--local`` runs here). See docs/ade20k.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from maskalign.errors import UserError
from maskalign.launcher import get_args_parser as launcher_parser
from maskalign.launcher import launch


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    from maskalign.segmentation.train import DEFAULT_CONFIG, SEG_CONFIG_DIR

    p = launcher_parser("ADE20K semantic segmentation (UperNet, mmsegmentation)", add_help=add_help)
    p.add_argument("--ckpt", required=True, help="pre-trained encoder: encoder.pth, checkpoint.pth or an MAE-style file")
    p.add_argument("--config", default=DEFAULT_CONFIG,
                   help=f"mmengine config: a path or a name in {SEG_CONFIG_DIR} (default: {DEFAULT_CONFIG})")
    p.add_argument("--data", default=None,
                   help="ADEChallengeData2016 folder (or its parent); default: the demo world's copy")
    p.add_argument("--output-dir", default="output", help="jobs write <output-dir>/ade20k/<name>/")
    p.add_argument("--name", default=None, help="run name (default: <config>_<checkpoint folder>)")
    p.add_argument("--eval-only", action="store_true", help="evaluate a finished model, no training")
    p.add_argument("--weights", default=None, help="with --eval-only: model checkpoint (default: newest in the run folder)")
    p.add_argument("--no-data-check", action="store_true",
                   help="skip reading every image/annotation pair before the job starts")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. train_cfg.max_iters=1000 optim_wrapper.optimizer.lr=2e-4")
    return p


def main(args: argparse.Namespace) -> int:
    from maskalign.segmentation.datasets import TRAIN, VAL, check_layout, resolve_root
    from maskalign.segmentation.task import SegTask
    from maskalign.segmentation.train import SegJobSpec, check_arch, load_seg_config, resolve_config
    from maskalign.encoders.spec import absolute_spec
    from maskalign.transfer.source import load_pretrained

    try:
        bad = [o for o in args.overrides if "=" not in o]
        if bad:
            raise UserError(f"command line: unexpected argument {bad[0]!r} (overrides are key=value)")
        if args.data:
            root = resolve_root(args.data)
        else:
            from maskalign.data.demo_world import ensure_ade20k

            root = ensure_ade20k()
        if not args.no_data_check and os.environ.get("RANK", "0") == "0":
            check_layout(root, (VAL,) if args.eval_only else (TRAIN, VAL))
        source = load_pretrained(args.ckpt)
        config = resolve_config(args.config)
        cfg = load_seg_config(config, args.overrides)
        check_arch(cfg.model.backbone, source.arch, config.name)
        name = args.name or f"{config.stem}_{Path(args.ckpt).resolve().parent.name}"
        spec = SegJobSpec(ckpt=absolute_spec(args.ckpt), config=str(config), data_root=str(root),
                          output_dir=str(Path(args.output_dir).resolve()), name=name,
                          overrides=list(args.overrides), eval_only=args.eval_only, weights=args.weights)
        result = launch(SegTask(vars(spec)), args, spec.work_dir, f"ade20k:{name}")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if isinstance(result, dict) and "metrics" in result:
        m = result["metrics"]
        print(f"\nDone. mIoU {m['miou']:.2f}  aAcc {m['aacc']:.2f}  mAcc {m['macc']:.2f}\n"
              f"Record: {result.get('record')}\nModel: {result.get('weights')}")
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
