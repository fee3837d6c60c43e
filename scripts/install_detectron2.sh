#!/usr/bin/env bash
# Install detectron2, the engine of the COCO benchmark (transfer/coco_vitdet.py), into the Python
# environment of $PYTHON (default python3): a venv, conda env or system Python alike.
#
#   bash scripts/install_detectron2.sh                  # auto: official route if GitHub answers, else registry
#   MASKALIGN_D2_ROUTE=official bash scripts/install_detectron2.sh
#   MASKALIGN_D2_ROUTE=registry bash scripts/install_detectron2.sh
#   MASKALIGN_D2_FORCE=1 bash scripts/install_detectron2.sh   # reinstall even if one is present
#
# detectron2 has no maintained PyPI release. Two routes:
#
# * official: pip install --no-build-isolation 'git+https://github.com/facebookresearch/detectron2.git'
#   (a source build of detectron2 with its compiled ops, ~4 min on 2 cores). Taken when GitHub
#   answers within a few seconds.
# * registry: PyPI's sal-detectron2==0.7.2 wheel, whose Python files equal upstream detectron2 of
#   2024-04 (ViTDet included). It is tagged cp310 and carries a CUDA-built _C extension, so it is
#   unpacked with --no-deps into its own folder inside this environment's site-packages, its
#   compiled _C*.so and its stray top-level tools/ package are deleted, and a .pth file puts the
#   folder on sys.path. Everything ViTDet Mask R-CNN needs runs without _C (ROIAlign and NMS come
#   from torchvision); only rotated boxes and deformable convs would need it.
#
# Both routes add what detectron2's code imports but its wheel metadata forgets: fvcore, iopath,
# hydra-core (LazyConfig's key=value overrides), pycocotools, cloudpickle. torch is never touched
# (--no-deps where a package would pull it). detectron2.model_zoo imports pkg_resources, which
# setuptools >= 81 no longer ships; maskalign.detection provides resource_filename to it at import
# time instead of pinning setuptools for the whole environment.
#
# The route taken is written to <site-packages>/maskalign_detectron2.json and shown by
#   python -m maskalign.detection.info
# Safe to run again: with a working detectron2 already there it only re-checks and reports.
set -euo pipefail

PY=${PYTHON:-python3}
ROUTE=${MASKALIGN_D2_ROUTE:-auto}
FORCE=${MASKALIGN_D2_FORCE:-0}
SAL_VERSION=0.7.2
GIT_URL='git+https://github.com/facebookresearch/detectron2.git'
PIP=("$PY" -m pip install -q --disable-pip-version-check)
# pip, minus the warnings some pip configurations print for every unused local index folder
pip_install() { "${PIP[@]}" "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }

say() { echo "[install_detectron2] $*"; }
t0=$(date +%s)

SITE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
TARGET="$SITE/maskalign_detectron2"
PTH="$SITE/maskalign_detectron2.pth"
MARKER="$SITE/maskalign_detectron2.json"
TORCH_BEFORE=$("$PY" -c 'import torch; print(torch.__version__)')

# 1. What detectron2 imports but does not declare (shapely: fvcore crops polygons with it, as LSJ does).
#    hydra-core needs antlr4 4.9 and omegaconf < 2.4; pip resolves both within maskalign's range.
say "dependencies: fvcore iopath hydra-core pycocotools cloudpickle shapely"
pip_install "fvcore>=0.1.5.post20221221" "iopath>=0.1.9" "hydra-core>=1.3,<1.4" "pycocotools>=2.0.7" \
    cloudpickle yacs tabulate termcolor shapely

works() {
  "$PY" - <<'EOF' >/dev/null 2>&1
import detectron2, detectron2.modeling.backbone.vit, detectron2.engine, detectron2.evaluation
EOF
}

if [ "$FORCE" != "1" ] && works; then
  say "detectron2 already importable from $("$PY" -c 'import detectron2, os; print(os.path.dirname(detectron2.__file__))')"
  if [ ! -f "$MARKER" ]; then
    "$PY" - "$MARKER" <<'EOF'
import json, sys, datetime, detectron2
json.dump({"route": "preinstalled", "detectron2": getattr(detectron2, "__version__", "?"),
           "path": detectron2.__file__,
           "installed": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")},
          open(sys.argv[1], "w"), indent=2)
EOF
  fi
  say "route: $("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["route"])' "$MARKER") (unchanged; MASKALIGN_D2_FORCE=1 reinstalls)"
  exit 0
fi

github_reachable() {
  "$PY" - <<'EOF'
import sys, urllib.request
try:
    urllib.request.urlopen("https://github.com/facebookresearch/detectron2", timeout=5)
except Exception:
    sys.exit(1)
EOF
}

remove_registry_copy() { rm -rf "$TARGET" "$PTH"; }

write_marker() {  # route, detail
  "$PY" - "$MARKER" "$1" "$2" "$(( $(date +%s) - t0 ))" <<'EOF'
import datetime, json, sys
marker, route, detail, seconds = sys.argv[1:]
import detectron2
json.dump({"route": route, "detail": detail, "detectron2": getattr(detectron2, "__version__", "?"),
           "path": detectron2.__file__, "install_seconds": int(seconds),
           "installed": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")},
          open(marker, "w"), indent=2)
EOF
}

official() {
  say "route: official (source build from GitHub, several minutes)"
  # --no-deps: its requirements are installed above; this keeps pip away from torch.
  pip_install --no-build-isolation --no-deps "$GIT_URL"
  remove_registry_copy
  write_marker official "$GIT_URL"
}

registry() {
  say "route: registry (sal-detectron2==$SAL_VERSION from PyPI, Python code only, into $TARGET)"
  local tmp="$TARGET.tmp.$$"
  rm -rf "$tmp"
  pip_install --no-deps --only-binary=:all: --python-version 3.10 --implementation cp \
      --target "$tmp" "sal-detectron2==$SAL_VERSION"
  # The CUDA-built extension cannot load against this torch; without it detectron2 falls back to
  # torchvision ops. tools/ is the repository's scripts folder, shipped as a top-level package.
  find "$tmp" -name '_C*.so' -delete
  rm -rf "$tmp/tools" "$tmp/bin"
  rm -rf "$TARGET"
  mv "$tmp" "$TARGET"
  echo "$TARGET" > "$PTH"
  write_marker registry "sal-detectron2==$SAL_VERSION (PyPI wheel, _C removed)"
}

case "$ROUTE" in
  official) official ;;
  registry) registry ;;
  auto)
    if github_reachable; then
      official || { say "official route failed; falling back to the registry route"; registry; }
    else
      say "GitHub not reachable (5 s probe)"
      registry
    fi ;;
  *) say "MASKALIGN_D2_ROUTE must be auto, official or registry (got '$ROUTE')"; exit 2 ;;
esac

TORCH_AFTER=$("$PY" -c 'import torch; print(torch.__version__)')
if [ "$TORCH_BEFORE" != "$TORCH_AFTER" ]; then
  say "ERROR: torch changed from $TORCH_BEFORE to $TORCH_AFTER"; exit 1
fi
works || { say "ERROR: detectron2 does not import after install"; "$PY" -c 'import detectron2.engine'; exit 1; }
say "done in $(( $(date +%s) - t0 )) s; see: $PY -m maskalign.detection.info"
