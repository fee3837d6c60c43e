#!/usr/bin/env bash
# The ADE20K engine: mmsegmentation 1.2.2 on mmengine 0.10.7 + mmcv-lite 2.1.0, all from PyPI.
#
# mmseg 1.2.2 asserts 2.0.0rc4 <= mmcv < 2.2.0. The only PyPI build of mmcv 2.1 that installs
# without a compiler is mmcv-lite (pure Python, no mmcv.ops); maskalign.segmentation stands in
# for the few mmcv.ops names mmseg imports. The compiled full mmcv is an opt-in (docs/ade20k.md).
# The three open-mmlab packages go in with --no-deps so that nothing replaces this torch; their
# own requirements are listed here instead. Safe to run again: it exits early when all is there.
set -euo pipefail
PY=${PYTHON:-python3}

have() {
  "$PY" - <<'PYEOF' 2>/dev/null
import importlib.metadata as md, sys
want = {"mmengine": "0.10.7", "mmsegmentation": "1.2.2", "ftfy": None, "regex": None}
for name, ver in want.items():
    try:
        v = md.version(name)
    except md.PackageNotFoundError:
        sys.exit(1)
    if ver and v != ver:
        sys.exit(1)
try:
    v = md.version("mmcv")          # a full mmcv 2.1.x built by the user counts too
except md.PackageNotFoundError:
    try:
        v = md.version("mmcv-lite")
    except md.PackageNotFoundError:
        sys.exit(1)
sys.exit(0 if v.startswith("2.1.") else 1)
PYEOF
}

if have; then
  echo "[install_mmseg] mmengine 0.10.7, mmcv 2.1, mmsegmentation 1.2.2 already installed"
  exit 0
fi

TORCH_BEFORE=$("$PY" -c 'import torch; print(torch.__version__)')
# What the three packages need (their metadata), none of which pulls torch.
"$PY" -m pip install -q addict 'pyyaml' rich termcolor yapf 'opencv-python>=3' packaging \
  prettytable scipy matplotlib ftfy regex
"$PY" -m pip install -q --no-deps mmengine==0.10.7 mmcv-lite==2.1.0 mmsegmentation==1.2.2
TORCH_AFTER=$("$PY" -c 'import torch; print(torch.__version__)')
if [ "$TORCH_BEFORE" != "$TORCH_AFTER" ]; then
  echo "[install_mmseg] torch changed from $TORCH_BEFORE to $TORCH_AFTER; reinstall torch==$TORCH_BEFORE" >&2
  exit 1
fi
"$PY" -c 'from maskalign.segmentation.mmseg_import import describe; print("[install_mmseg]", describe())'
