"""Shared by the transfer tests: demo robustness sizes and a classifier checkpoint made on the spot."""

from __future__ import annotations

from pathlib import Path

import torch

# Sizes of the demo robustness copies in the test world (small: the tests check plumbing and
# protocol, not accuracy). Every test asks for the same sizes so the copies are built once.
DEMO_PER_CLASS = 4
DEMO_C_PER_CLASS = 1
TINY_ARCH = {"img_size": 64, "patch_size": 16, "embed_dim": 32, "depth": 2, "num_heads": 2, "mlp_ratio": 2.0}


def robustness_overrides(output_dir: Path, *extra: str) -> list[str]:
    return [f"output_dir={output_dir}", f"data.demo_per_class={DEMO_PER_CLASS}",
            f"data.demo_c_per_class={DEMO_C_PER_CLASS}", "data.num_workers=0", *extra]


def make_classifier_ckpt(path: Path, arch: dict = TINY_ARCH, seed: int = 0) -> Path:
    """A random-weight demo classifier in the format transfer/finetune.py writes."""
    from maskalign.data.demo_world.shapes import WNIDS
    from maskalign.transfer.classifier import build_classifier, classifier_spec

    torch.manual_seed(seed)
    model = build_classifier(arch, len(WNIDS), kind="finetune", head_init_std=0.02)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "classes": list(WNIDS), "crop_pct": 1.0, "run": "fake",
                "meta": {"arch": arch, "method": "maskalign", "run": "fake"},
                "classifier": classifier_spec(arch, len(WNIDS), "finetune", arch["img_size"], "avg")}, path)
    return path


def mini_imagenet(full_demo_imagenet: Path, dest: Path, train: int = 8, val: int = 4) -> Path:
    """A real-layout ImageNet folder of a few demo images per class (symlinks), for fast loops."""
    for split, n in (("train", train), ("val", val)):
        for cls in sorted(p for p in (full_demo_imagenet / split).iterdir() if p.is_dir()):
            folder = dest / split / cls.name
            folder.mkdir(parents=True, exist_ok=True)
            for img in sorted(cls.iterdir())[:n]:
                (folder / img.name).symlink_to(img)
    return dest


def run_task(task: str, cfg, ckpt) -> dict:
    """Run ``task``'s job on a config resolved by the test (``load_config`` + overrides), as the job
    of its entry script would run it: run folder taken, record written from the returned metrics."""
    from omegaconf import OmegaConf

    from maskalign.tasks import JobSpec, TaskJob, get_task

    plain = OmegaConf.to_container(cfg, resolve=True) if not isinstance(cfg, dict) else cfg
    spec = JobSpec(task=task, ckpt=str(ckpt), output_root=str(plain["output_dir"]), run=str(plain["name"]),
                   resolved=plain)
    return TaskJob(spec, get_task(task).module)()
