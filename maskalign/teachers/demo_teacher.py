"""The demo world's teacher: a small token-grid CNN the project trains itself, with dense labels.

No CLIP or DINO weights can be downloaded here, and a random teacher would make MaskAlign
meaningless. So the first run trains a teacher on a "teacher corpus" drawn by the demo world's
scene renderer (as CLIP was trained on data other than ImageNet), saves it beside the demo data
(``teacher/encoder.pth`` + ``encoder.json``, tensors only) and serves it as a frozen teacher.

Why a CNN (:mod:`maskalign.teachers.token_cnn`) and not a ViT: in the few CPU-minutes a first run
can spend, a small ViT from scratch stays near chance on the demo shapes, while a CNN whose feature
maps sit on the student's 8x8 token grid reaches about 60%. Its blocks give per-token features
and its attention-pooling head a [CLS]->patch attention, the two things MaskAlign needs of a teacher.

Why dense labels: the renderer knows every pixel's class, so each patch token is also trained to
name the object it covers (or background), next to the image label of the largest object: many
times more signal per image, and patch features that carry what MaskAlign's targets should.
"""

from __future__ import annotations

import fcntl
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from maskalign.teachers.registry import register_teacher
from maskalign.teachers.token_cnn import KIND, TokenCNN, TokenCNNTeacher

DEMO_TEACHER_ARCH = {"kind": KIND, "img_size": 64, "patch_size": 8, "embed_dim": 128, "depth": 6}
VERSION = 3
CORPUS_SEED = 20230227  # a stream of its own, disjoint from the demo ImageNet copy's images
LABEL = "DemoCNN/8 (dense-supervised)"


def render_corpus(n: int, size: int, patch: int, seed: int = CORPUS_SEED):
    """``n`` scenes of 1-2 objects: normalised images, image labels, per-patch labels (10 = background)."""
    from maskalign.data.demo_world import NUM_CLASSES, image_rng, render_scene
    from maskalign.teachers.base import IMAGENET_MEAN, IMAGENET_STD

    grid = size // patch
    images, labels, patch_labels = [], [], []
    for i in range(n):
        rng = image_rng(seed, "teacher-corpus", i)
        img, masks, classes = render_scene(rng, size, int(rng.integers(1, 3)), scale=(0.2, 0.42))
        dense = np.full((size, size), NUM_CLASSES, dtype=np.int64)
        for m, c in zip(masks, classes):
            dense[m] = c
        # A patch is labelled with the class covering most of its pixels (background included).
        blocks = dense.reshape(grid, patch, grid, patch).transpose(0, 2, 1, 3).reshape(grid * grid, -1)
        counts = np.stack([(blocks == k).sum(1) for k in range(NUM_CLASSES + 1)], 1)
        images.append(img)
        labels.append(int(classes[masks.reshape(len(classes), -1).sum(1).argmax()]))
        patch_labels.append(counts.argmax(1))
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return x, torch.tensor(labels), torch.from_numpy(np.stack(patch_labels))


def _evaluate(model: TokenCNN, loader: DataLoader) -> float:
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            correct += (model(x)[0].argmax(1) == y).sum().item()
            total += y.numel()
    return 100.0 * correct / max(total, 1)


def train_demo_teacher(demo_imagenet: Path, out: Path, epochs: int = 12, corpus: int = 3000,
                       seed: int = 0) -> dict:
    """Train, evaluate on the demo ImageNet val split, and save to ``out/encoder.pth``.

    Runs under a forked RNG: training the teacher (a first run) or loading it from the cache
    leaves the caller's RNG in the same state, so the student that follows is the same either way.
    """
    with torch.random.fork_rng(devices=[]):
        return _train_demo_teacher(demo_imagenet, out, epochs, corpus, seed)


def _train_demo_teacher(demo_imagenet: Path, out: Path, epochs: int, corpus: int, seed: int) -> dict:
    from maskalign.atomic import atomic_torch_save, atomic_write_text
    from maskalign.data.demo_world import NUM_CLASSES
    from maskalign.data.imagenet import image_folder
    from maskalign.data.transforms import eval_transform
    from maskalign.engine.optim import cosine_lr, param_groups, set_lr

    torch.manual_seed(seed)
    a = DEMO_TEACHER_ARCH
    x, y, p = render_corpus(corpus, a["img_size"], a["patch_size"])
    loader = DataLoader(TensorDataset(x, y, p), batch_size=64, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(seed))
    val = DataLoader(image_folder(demo_imagenet, "val", eval_transform(a["img_size"], crop_pct=1.0)),
                     batch_size=128)
    model = TokenCNN(a, NUM_CLASSES)
    lr = 3e-3
    opt = torch.optim.AdamW(param_groups(model, 0.05), lr=lr)
    g = a["img_size"] // a["patch_size"]
    for epoch in range(epochs):
        model.train()
        for i, (xb, yb, pb) in enumerate(loader):
            set_lr(opt, cosine_lr(epoch + i / len(loader), lr, 1e-5, 1, epochs))
            flip = torch.rand(xb.shape[0]) < 0.5
            xb = torch.where(flip.view(-1, 1, 1, 1), xb.flip(3), xb)
            pb = torch.where(flip.view(-1, 1), pb.view(-1, g, g).flip(2).reshape(len(pb), -1), pb)
            logits, patch_logits = model(xb)
            loss = F.cross_entropy(logits, yb) + F.cross_entropy(patch_logits.flatten(0, 1), pb.flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    acc = _evaluate(model, val)
    meta = {"arch": a, "num_classes": NUM_CLASSES, "label": LABEL, "val_top1": acc, "epochs": epochs,
            "corpus_images": corpus, "version": VERSION}
    out.mkdir(parents=True, exist_ok=True)
    atomic_torch_save({k: v.contiguous() for k, v in model.state_dict().items()}, out / "encoder.pth")
    atomic_write_text(out / "encoder.json", json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta


def is_token_cnn(path: str | Path) -> bool:
    """Whether ``path`` is a teacher file of this module (its sidecar names the kind)."""
    side = Path(path).with_suffix(".json")
    try:
        return json.loads(side.read_text()).get("arch", {}).get("kind") == KIND
    except (OSError, ValueError, AttributeError):
        return False


def load_demo_teacher(path: str | Path, input_size: int | None = None, label: str | None = None) -> TokenCNNTeacher:
    """The frozen teacher saved by :func:`train_demo_teacher`."""
    from maskalign.checkpoint import CheckpointError, load_file

    path = Path(path)
    meta = json.loads(path.with_suffix(".json").read_text())
    model = TokenCNN(meta["arch"], int(meta["num_classes"]))
    try:
        model.load_state_dict(load_file(path))
    except (RuntimeError, TypeError, AttributeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise CheckpointError(f"{path}: does not fit the demo teacher {meta['arch']} ({first})") from None
    return TokenCNNTeacher(model, label or meta.get("label") or LABEL, input_size)


def ensure_demo_teacher(demo_root: Path | None = None) -> Path:
    """Train the demo teacher once (under a file lock) and return its ``encoder.pth``.

    Its epochs and corpus follow the demo-world size (:mod:`maskalign.data.demo_world.sizes`): a
    tiny world's teacher has the full one's shape, trained in seconds, and is never taken for it.
    """
    from maskalign.data.demo_world import ensure_imagenet
    from maskalign.data.demo_world.sizes import sizes_of

    imagenet = ensure_imagenet(demo_root)
    size = sizes_of("teacher")
    want = {"version": VERSION, "epochs": size["epochs"], "corpus_images": size["corpus"]}
    out = imagenet.parent / "teacher"
    enc = out / "encoder.pth"
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        side = out / "encoder.json"
        if enc.is_file() and side.is_file() and want.items() <= json.loads(side.read_text()).items():
            return enc
        t0 = time.time()
        print(f"[demo] training the demo teacher (once; cached in {out})", flush=True)
        meta = train_demo_teacher(imagenet, out, epochs=size["epochs"], corpus=size["corpus"])
        print(f"[demo] demo teacher: top-1 {meta['val_top1']:.1f}% on the demo val split "
              f"in {time.time() - t0:.0f}s", flush=True)
    return enc


def _depth(cfg: Any) -> int:
    return int(DEMO_TEACHER_ARCH["depth"])


@register_teacher("demo", depth=_depth)
def _build(cfg: Any, student_img_size: int) -> TokenCNNTeacher:
    """The demo world's own teacher, trained on first use (:func:`ensure_demo_teacher`)."""
    return load_demo_teacher(ensure_demo_teacher(), cfg.input_size or None, cfg.label)
