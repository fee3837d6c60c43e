"""``python -m maskalign.encoders inspect <spec>``: what an encoder file or hub name loads as.

Prints the family, the timm model and its sizes, the source (path + sha256 prefix, or hub name)
and the loading report (tensors used, tensors dropped and why), in one screen. Optional
``--task coco|ade20k`` also says whether that dense task runs the family, and through which
backbone. Bad input: one line ``error: ...`` and exit code 2.
"""

from __future__ import annotations

import argparse
import sys

from maskalign.errors import UserError


def dense_route(loaded: object, task: str) -> str:
    """How ``task`` (coco or ade20k) runs this encoder; raises ``UserError`` where it cannot."""
    from maskalign.encoders.families import is_plain_vit

    family, state, arch = loaded.family, loaded.state, loaded.arch  # type: ignore[attr-defined]
    patch = int(arch["patch_size"])
    if is_plain_vit(state, family) and (task != "coco" or patch in (8, 16)):
        return f"{task}: plain ViT -> {'detectron2' if task == 'coco' else 'mmseg'}'s own ViT backbone (as always)"
    if task == "coco":
        if patch not in (8, 14, 16):
            raise UserError(f"coco: patch size {patch} is not supported by the ViTDet pyramid here "
                            f"(supported: 8, 16, and 14 resampled onto the stride-16 grid)")
        route = "coco: timm wrapper (maskalign.detection.timm_backbone.TimmViTBackbone), ViTDet windows"
        if family == "beit":
            route += "; relative position tables resized per window and for the global blocks"
        if patch == 14:
            route += "; the stride-14 map resampled onto the stride-16 grid"
        return route
    return "ade20k: timm wrapper (maskalign.segmentation.timm_backbone.MaskalignTimmViT), global attention"


def inspect(spec: str, img_size: int | None, task: str | None) -> str:
    from maskalign.encoders import load_encoder
    from maskalign.encoders.families import built_timm_name

    enc = load_encoder(spec, img_size=img_size)
    a, src = enc.arch, enc.meta["source"]
    where = f"{src['path']} (sha256 {src['sha256'][:12]})" if "path" in src else src["hub"]
    lines = [f"encoder  {enc.meta['label']}",
             f"family   {enc.family}",
             f"arch     timm {built_timm_name(a)}: width {a['embed_dim']}, depth {a['depth']}, heads {a['num_heads']}, "
             f"patch {a['patch_size']}, mlp {a['mlp_ratio']:g}, trained at {a['img_size']}px"
             + (f", built for {img_size}px" if img_size else ""),
             "options  " + ", ".join(f"{k}={v}" for k, v in sorted(a["timm_kwargs"].items())
                                      if k not in ("patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio")),
             f"source   {where}"]
    if not enc.meta.get("external"):
        lines.append(f"pretrain method {enc.meta.get('method')}, supervision {enc.meta.get('supervision')}, "
                     f"epochs {enc.meta.get('pt_epochs')}")
    lines += enc.report.lines()
    if task:
        lines.append(dense_route(enc, task))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m maskalign.encoders", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("inspect", help="family, arch, tensors used and dropped")
    p.add_argument("spec", help="a checkpoint file [#act=..,num_heads=..], timm:<name>[.tag] or "
                                "open_clip:<model>/<tag>")
    p.add_argument("--img-size", type=int, default=None, help="build for this resolution")
    p.add_argument("--task", choices=("coco", "ade20k"), default=None, help="also check a dense task runs it")
    args = parser.parse_args(argv)
    try:
        print(inspect(args.spec, args.img_size, args.task))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
