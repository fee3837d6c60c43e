#!/usr/bin/env bash
# The one install step of the suite, used by the README and by CI alike.
#   bash install.sh            # the package, its tests, and the detection/segmentation engines
#   MASKALIGN_MINIMAL=1 bash install.sh   # the package and its tests only
# Every step installs from the package registries; nothing is built from a fetched repository.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
"$PY" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
"$PY" -m pip install -q -e '.[dev]'
if [ "${MASKALIGN_MINIMAL:-0}" != "1" ]; then
  for step in scripts/install_*.sh; do
    [ -e "$step" ] || continue
    echo "[install] $step"
    PYTHON="$PY" bash "$step"
  done
fi
echo "[install] done: $("$PY" -c 'import maskalign, torch; print("maskalign", maskalign.__version__, "torch", torch.__version__)')"
