"""A stand-in transfer script for the pipeline tests: the command-line contract, none of the work.

``python tests/fake_transfer.py --ckpt CKPT [--local] output_dir=OUT name=RUN kind=KIND [fail=1]``
writes ``OUT/KIND/RUN/record.json`` naming a product checkpoint, and ``started.json`` with when it
started and what it consumed, so tests can check ordering. It imports no torch: it starts fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--ckpt", required=True)
    p.add_argument("--local", action="store_true")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    kv = dict(o.split("=", 1) for o in args.overrides)
    ckpt = Path(args.ckpt)
    out = Path(kv["output_dir"]) / kv.get("kind", "fake") / kv["name"]
    out.mkdir(parents=True, exist_ok=True)
    started = {"time": time.time(), "ckpt": str(ckpt), "ckpt_exists": ckpt.is_file(),
               "ckpt_mtime": ckpt.stat().st_mtime if ckpt.is_file() else None,
               "slurm_job_id": os.environ.get("SLURM_JOB_ID"), "local": args.local}
    (out / "started.json").write_text(json.dumps(started))
    if kv.get("fail") == "1" or not ckpt.is_file():
        print(f"fake_transfer: failing on purpose (ckpt exists: {ckpt.is_file()})", file=sys.stderr)
        return 3
    product = out / "product.pth"
    product.write_bytes(b"not a real checkpoint")
    record = {"task": kv.get("kind", "fake"), "metrics": {"score": 1.0},
              "checkpoint": {"path": str(product.resolve())}, "source_checkpoint": {"path": str(ckpt.resolve())}}
    (out / "record.json").write_text(json.dumps(record))
    print(f"fake_transfer: {kv.get('kind')}/{kv['name']} consumed {ckpt}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
