"""Turn every job record under an output root into the paper's Tables 1-7, robustness and segmentation.

    python results/make_tables.py [--root output] [--out <root>/tables] [--latex] [--figures]

Writes ``table1.csv`` ... ``table7.csv``, ``robustness.csv``, ``robustness_in_c.csv`` and
``segmentation.csv``, each also as ``.md`` (and ``.tex`` with ``--latex``), with the paper's numbers
(shipped with the package) beside ours. Prints how many records each table grouped into how many
rows, every record no table shows and why, and which runs a complete table still needs; an
unreadable record file is named on stderr and skipped. The record schema is ``results/SCHEMA.md``.
"""

from __future__ import annotations

import argparse
import sys

from maskalign.config import default_output_root
from maskalign.results import DEFAULT_REFERENCE_DIR
from maskalign.results.render_all import make_tables


def get_args_parser(
    description: str | None = None,
    parents: list[argparse.ArgumentParser] | None = None,
    add_help: bool = True,
) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=description or __doc__.splitlines()[0], parents=parents or [], add_help=add_help
    )
    parser.add_argument(
        "--root",
        default=default_output_root(),
        help="output root searched for */record.json (default: $MASKALIGN_OUTPUT, else output)",
    )
    parser.add_argument("--out", default=None, help="folder for the tables (default: <root>/tables)")
    parser.add_argument(
        "--reference",
        default=str(DEFAULT_REFERENCE_DIR),
        help="folder of the paper's typed-in tables (default: the paper's, shipped with the package)",
    )
    parser.add_argument("--latex", action="store_true", help="also write <table>.tex (booktabs)")
    parser.add_argument("--figures", action="store_true", help="also draw fig_mask_ratio.png (Table 4)")
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 when a record is unreadable or a table is incomplete"
    )
    return parser


def main(args: argparse.Namespace) -> int:
    summary = make_tables(args.root, args.out, args.reference, latex=args.latex, figures=args.figures)
    for line in summary.errors:
        print(line, file=sys.stderr)
    print(f"read {summary.n_records} records under {args.root}")
    for line in summary.grouped:
        print(f"grouped {line}")
    for line in summary.left_out:
        print(f"left out {line}")
    for line in summary.notes:
        print(f"note: {line}")
    for line in summary.missing:
        print(line)
    if not summary.missing:
        print("all tables complete")
    print(f"wrote {len(summary.written)} files to {summary.out}")
    if args.strict and (summary.missing or summary.errors):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_intermixed_args()))
