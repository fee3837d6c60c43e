"""The demo world's teacher: a small ViT the project trains itself, supervised, on the demo data.

No CLIP or DINO weights can be downloaded here, and a randomly initialised teacher would make
MaskAlign meaningless. So the first run trains a small classifier ViT on the demo world's
ImageNet-layout copy (about a minute on 2 CPU cores), exports its encoder in the same format as
every other encoder of this project, and caches it beside the data for later runs. It is then
an ordinary ``local`` teacher.
"""

from __future__ import annotations

import fcntl
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

DEMO_TEACHER_ARCH = {"img_size": 64, "patch_size": 8, "embed_dim": 128, "depth": 6, "num_heads": 4, "mlp_ratio": 4.0}
_VERSION = 1


def _evaluate(model: torch.nn.Module, loader: DataLoader) -> float:
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            correct += (model(x).argmax(1) == y).sum().item()
            total += y.numel()
    return 100.0 * correct / max(total, 1)


def train_demo_teacher(data_root: Path, out: Path, epochs: int = 12, seed: int = 0) -> dict:
    from maskalign.checkpoint import build_timm_vit, export_encoder
    from maskalign.data.imagenet import image_folder
    from maskalign.data.transforms import eval_transform, pretrain_transform
    from maskalign.engine.optim import cosine_lr, param_groups, set_lr

    torch.manual_seed(seed)
    size = DEMO_TEACHER_ARCH["img_size"]
    train = image_folder(data_root, "train", pretrain_transform(size, scale_min=0.35))
    val = image_folder(data_root, "val", eval_transform(size, crop_pct=1.0))
    g = torch.Generator().manual_seed(seed)
    tl = DataLoader(train, batch_size=64, shuffle=True, drop_last=True, num_workers=2, generator=g)
    vl = DataLoader(val, batch_size=128, num_workers=2)
    model = build_timm_vit(DEMO_TEACHER_ARCH, num_classes=len(train.classes), drop_path_rate=0.05)
    opt = torch.optim.AdamW(param_groups(model, 0.05), lr=1e-3)
    for epoch in range(epochs):
        model.train()
        for i, (x, y) in enumerate(tl):
            set_lr(opt, cosine_lr(epoch + i / len(tl), 1e-3, 1e-5, 1, epochs))
            loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    acc = _evaluate(model, vl)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    meta = {"arch": DEMO_TEACHER_ARCH, "label": "DemoViT-S/8 (supervised)", "val_top1": acc,
            "trained_on": str(data_root), "epochs": epochs, "version": _VERSION}
    export_encoder(out, state, meta)
    return meta


def ensure_demo_teacher(data_root: Path | None = None) -> Path:
    """Train the demo teacher once (under a file lock) and return its ``encoder.pth``."""
    from maskalign.data.demo_world import ensure_imagenet

    data_root = ensure_imagenet(data_root)
    out = data_root.parent / "teacher"
    enc = out / "encoder.pth"
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        side = out / "encoder.json"
        if enc.is_file() and side.is_file() and json.loads(side.read_text()).get("version") == _VERSION:
            return enc
        t0 = time.time()
        print(f"[demo] training the demo teacher on {data_root} (once; cached in {out})", flush=True)
        meta = train_demo_teacher(data_root, out)
        print(f"[demo] demo teacher: val top-1 {meta['val_top1']:.1f}% in {time.time() - t0:.0f}s", flush=True)
    return enc
