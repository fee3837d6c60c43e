"""``python -m maskalign.detection.info``: how detectron2 is installed in this Python, and whether it works.

``scripts/install_detectron2.sh`` records the route it took (official source build from GitHub,
or PyPI's ``sal-detectron2`` wheel without its compiled ops) in
``<site-packages>/maskalign_detectron2.json``; this prints that record with what is importable
now. Exit status 0 when detectron2 and the ViTDet pieces import, 1 otherwise.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import json
import sys
import sysconfig
from pathlib import Path
from typing import Any

MARKER = "maskalign_detectron2.json"


def install_record() -> dict[str, Any] | None:
    for base in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}:
        p = Path(base) / MARKER
        if p.is_file():
            try:
                return json.loads(p.read_text())
            except (OSError, json.JSONDecodeError):
                return {"route": "unknown", "detail": f"{p} unreadable"}
    return None


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def collect() -> dict[str, Any]:
    info: dict[str, Any] = {"python": sys.executable, "install": install_record()}
    from maskalign.detection._compat import Detectron2Missing, import_detectron2

    try:
        d2 = import_detectron2()
        info["detectron2"] = {
            "version": getattr(d2, "__version__", "?"),
            "path": str(Path(d2.__file__).parent),
        }
        try:
            importlib.import_module("detectron2._C")
            info["detectron2"]["compiled_ops"] = True
        except ImportError:
            info["detectron2"]["compiled_ops"] = False
        from detectron2.modeling import SimpleFeaturePyramid, ViT  # noqa: F401

        info["ok"] = True
    except Detectron2Missing as e:
        info["ok"], info["error"] = False, str(e)
    info["packages"] = {
        d: _version(d)
        for d in (
            "torch",
            "torchvision",
            "fvcore",
            "iopath",
            "hydra-core",
            "omegaconf",
            "pycocotools",
            "sal-detectron2",
            "detectron2",
        )
    }
    return info


def main() -> int:
    info = collect()
    rec = info["install"] or {}
    route = rec.get("route", "not recorded (installed by hand?)")
    print(f"detectron2 install route: {route}" + (f" - {rec['detail']}" if rec.get("detail") else ""))
    if info["ok"]:
        d2 = info["detectron2"]
        ops = (
            "yes"
            if d2["compiled_ops"]
            else "no (ROIAlign/NMS from torchvision; rotated boxes, deformable conv unavailable)"
        )
        print(f"detectron2 {d2['version']} at {d2['path']}\ncompiled ops (_C): {ops}")
    else:
        print(f"detectron2: NOT usable: {info['error']}")
    print("packages: " + ", ".join(f"{k} {v}" for k, v in info["packages"].items() if v))
    if "--json" in sys.argv[1:]:
        print(json.dumps(info, indent=2))
    return 0 if info["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
