"""Figure 3 of the paper: the last block's [CLS] attention over a few images, checkpoints side by side.

    python results/attention_maps.py --ckpt A.pth --ckpt B.pth [--label A --label B] \\
        [--images DIR] [--num-images 4] --out fig.png

Each checkpoint is an encoder export (timm ViT key names) with an optional sidecar ``<stem>.json``
(``{"arch": {...}, "label": ..., "mean": [...], "std": [...]}``); this project's
``OUTPUT/pretrain/<run>/encoder.pth`` + ``encoder.json`` are such exports. Without ``--images`` the
images come from the demo world (object-centric ones, then multi-object scenes).
"""

from __future__ import annotations

import argparse
import sys

from maskalign.results.attention import attention_maps, demo_images, load_encoder, load_images, render


def get_args_parser(
    description: str | None = None,
    parents: list[argparse.ArgumentParser] | None = None,
    add_help: bool = True,
) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=description or __doc__.splitlines()[0], parents=parents or [], add_help=add_help
    )
    parser.add_argument(
        "--ckpt", action="append", required=True, help="encoder export (.pth); repeat for more"
    )
    parser.add_argument(
        "--label",
        action="append",
        default=None,
        help="column title per --ckpt, in order (default: sidecar label or file stem)",
    )
    parser.add_argument("--images", default=None, help="folder of .jpg/.png images (default: demo world)")
    parser.add_argument("--num-images", type=int, default=4)
    parser.add_argument("--out", required=True, help="output PNG")
    parser.add_argument("--dpi", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0, help="seed of the default demo-world images")
    return parser


def main(args: argparse.Namespace) -> int:
    labels = args.label or []
    if len(labels) > len(args.ckpt):
        print("attention_maps: more --label than --ckpt", file=sys.stderr)
        return 2
    try:
        encoders = [load_encoder(c, labels[i] if i < len(labels) else None) for i, c in enumerate(args.ckpt)]
        images = (
            load_images(args.images, args.num_images)
            if args.images
            else demo_images(args.num_images, seed=args.seed)
        )
    except (OSError, ValueError, TypeError, RuntimeError) as e:  # a bad --ckpt or --images: one line
        print(f"attention_maps: {e}", file=sys.stderr)
        return 2
    out = render(images, encoders, attention_maps(encoders, images), args.out, dpi=args.dpi)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_intermixed_args()))
