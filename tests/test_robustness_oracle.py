"""The robustness job's numbers, from an oracle classifier whose right answers are known image by image.

Each test image is one flat colour that encodes two class indices: its true class (red) and the
class the oracle ranks first (green). The oracle gives that class logit 5, the true class 4 (or 5
when they coincide) and every other class 0, so for every image it is known by hand whether it
is a top-1 hit, a top-5 hit, a hit among a 200-class-style subset's logits only, or a hit among all
logits. The job runs on these folders in the layouts of the real releases; the expected
accuracies, per-severity errors and CEs below are counted by hand (AlexNet's errors are the
values of ``google-research/augmix``'s ``imagenet.py``, written out here).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from transfer_helpers import make_classifier_ckpt, run_task

from maskalign.config import config_dir, load_config
from maskalign.data.demo_world.robustness_layouts import DEMO_SUBSETS
from maskalign.data.demo_world.shapes import WNIDS
from maskalign.records import read_record
from maskalign.teachers.base import IMAGENET_MEAN, IMAGENET_STD

K = len(WNIDS)  # 10 demo classes
A = [WNIDS.index(w) for w in sorted(DEMO_SUBSETS["imagenet_a"])]  # class indices, in the subset's target order
R = [WNIDS.index(w) for w in sorted(DEMO_SUBSETS["imagenet_r"])]
ALEXNET = {"gaussian_noise": 0.886428, "shot_noise": 0.894468}  # augmix imagenet.py ALEXNET_ERR


def _level(i: int) -> int:
    return 20 + 20 * i


def _write(folder: Path, name: str, true: int, winner: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 40), (_level(true), _level(winner), 128)).save(folder / f"{name}.png")


class Oracle(torch.nn.Module):
    """Reads (true class, winner) back from the normalised flat image; logits as the module doc says."""

    def __init__(self, classes: int = K) -> None:
        super().__init__()
        self.classes = classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        rgb = ((x * std + mean) * 255).mean(dim=(2, 3))
        true = ((rgb[:, 0] - 20) / 20).round().long()
        winner = ((rgb[:, 1] - 20) / 20).round().long()
        logits = torch.zeros(x.shape[0], self.classes)
        rows = torch.arange(x.shape[0])
        logits[rows, true] = 4.0
        logits[rows, winner] = 5.0
        return logits


def _subset_set(root: Path, subset: list[int]) -> dict[str, float]:
    """Per class of the subset: one image right everywhere, one right only among the subset's logits
    (the winner is outside the subset), one wrong among them (another subset class wins, the true class
    second). Returns the expected top-1 over the subset's logits, and what all logits would give."""
    outside = next(c for c in range(K) if c not in subset)
    hits_subset = hits_all = n = 0
    for pos, c in enumerate(subset):
        other = subset[(pos + 1) % len(subset)]
        for j, winner in enumerate((c, outside, other)):
            _write(root / WNIDS[c], f"{j}", c, winner)
            n += 1
            hits_subset += winner == c or winner == outside
            hits_all += winner == pos  # all logits: the folder's target is the subset position
    return {"top1": 100.0 * hits_subset / n, "all_logits": 100.0 * hits_all / n}


@pytest.fixture(scope="module")
def oracle_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("robust")
    # ImageNet val: per class one right, one with the true class second.
    for c in range(K):
        _write(tmp / "imagenet" / "val" / WNIDS[c], "0", c, c)
        _write(tmp / "imagenet" / "val" / WNIDS[c], "1", c, (c + 1) % K)
    exp_a = _subset_set(tmp / "imagenet-a", A)
    exp_r = _subset_set(tmp / "imagenet-r", R)
    # ImageNet-C: at severity s, the classes c < s have the true class second (top-5 hit, top-1 miss),
    # so the top-1 error is s/10 and the top-5 error 0; shot noise gets one more miss per severity.
    for name, extra in (("gaussian_noise", 0), ("shot_noise", 1)):
        for s in range(1, 6):
            for c in range(K):
                _write(tmp / "imagenet-c" / name / str(s) / WNIDS[c], "0", c, (c + 1) % K if c < s + extra else c)
    ckpt = make_classifier_ckpt(tmp / "classifier" / "checkpoint.pth")
    return {"tmp": tmp, "ckpt": ckpt, "a": exp_a, "r": exp_r}


@pytest.fixture(scope="module")
def result(oracle_run: dict) -> dict:
    from maskalign.transfer import robustness

    tmp, ckpt = oracle_run["tmp"], oracle_run["ckpt"]
    cfg = load_config(None, [f"output_dir={tmp / 'out'}", "name=oracle", "data.num_workers=0", "data.batch_size=7",
                             "runtime.device=cpu", "runtime.amp=none", "benchmarks=[in1k,in_a,in_r,in_c]",
                             f"data.root={tmp / 'imagenet'}", f"data.imagenet_a={tmp / 'imagenet-a'}",
                             f"data.imagenet_r={tmp / 'imagenet-r'}", f"data.imagenet_c={tmp / 'imagenet-c'}"],
                      config_dir("robustness"))
    real = robustness.load_classifier

    def with_oracle(path):
        model, saved = real(path)  # the classifier of the file, head and all, answering as the oracle
        model.forward = Oracle().forward
        return model, saved

    return _run_with_oracle(robustness, cfg, ckpt, with_oracle)


def _run_with_oracle(robustness, cfg, ckpt: Path, with_oracle) -> dict:
    mp = pytest.MonkeyPatch()
    mp.setattr(robustness, "load_classifier", with_oracle)
    try:
        return run_task("robustness", cfg, ckpt)
    finally:
        mp.undo()


def test_the_oracle_images_read_back() -> None:
    """The premise: the eval transform keeps the flat colours, so the oracle knows every image."""
    from maskalign.data.transforms import eval_transform

    t = eval_transform(64, 1.0)
    img = Image.new("RGB", (40, 40), (_level(7), _level(2), 128))
    logits = Oracle()(t(img)[None])
    assert logits[0, 2] == 5.0 and logits[0, 7] == 4.0 and logits.sum() == 9.0


def test_clean_top1_and_top5(result: dict) -> None:
    assert (result["details"]["img_size"], result["details"]["crop_pct"]) == (64, 1.0)  # the classifier's own
    b = result["details"]["benchmarks"]["in1k"]
    assert b["n"] == 2 * K
    assert b["top1"] == pytest.approx(50.0) and b["top5"] == pytest.approx(100.0)
    assert result["metrics"]["in1k_top1"] == pytest.approx(50.0)


@pytest.mark.parametrize("key", ["a", "r"])
def test_subset_benchmarks_score_their_classes_logits_only(result: dict, oracle_run: dict, key: str) -> None:
    expected = oracle_run[key]
    assert expected["top1"] != pytest.approx(expected["all_logits"])  # the test tells the two apart
    assert result["metrics"][f"in_{key}_top1"] == pytest.approx(expected["top1"])
    assert result["details"]["benchmarks"][f"in_{key}"]["top1"] == pytest.approx(expected["top1"])


def test_imagenet_c_errors_are_top1_per_severity(result: dict) -> None:
    res = result["details"]["benchmarks"]["in_c"]
    for name, extra in (("gaussian_noise", 0), ("shot_noise", 1)):
        errors = [min(s + extra, K) / K for s in range(1, 6)]
        assert res["error_pct"][name] == {str(s): pytest.approx(100.0 * e) for s, e in zip(range(1, 6), errors)}
        ce = 100.0 * (sum(errors) / 5) / ALEXNET[name]
        assert res["ce"][name] == pytest.approx(ce, rel=1e-6)
        assert result["metrics"][f"in_c_ce/{name}"] == pytest.approx(ce, rel=1e-6)
    assert res["ce"]["gaussian_noise"] == pytest.approx(100.0 * 0.3 / 0.886428, rel=1e-6)  # 33.84
    assert result["metrics"]["in_c_mce"] != result["metrics"]["in_c_mce"]  # 2 of 15 corruptions: NaN


def test_the_head_is_reported_used_not_dropped(result: dict, capsys: pytest.CaptureFixture) -> None:
    """Robustness evaluates the fine-tuned classifier with its head: the record must not call it dropped."""
    rec = read_record(Path(result["out_dir"]) / "record.json")
    loading = rec.config["encoder"]["loading"]
    assert "head" not in loading["dropped"], loading
    assert loading["used"].get("head") == 2, loading


def test_v2_index_folders_and_sketch_with_twelve_classes(tmp_path: Path) -> None:
    """ImageNet-V2 names its folders by class index: with 12 classes a string sort ("0", "1", "10",
    "11", "2", ...) would scramble the targets. Even classes are hits, odd ones misses: 50 %."""
    from maskalign.transfer import robustness
    from maskalign.transfer.classifier import build_classifier, classifier_spec

    n = 12
    wnids = [f"n7{i:07d}" for i in range(n)]
    for c in range(n):
        winner = c if c % 2 == 0 else (c + 1) % n
        _write(tmp_path / "v2" / str(c), "0", c, winner)
        _write(tmp_path / "sketch" / wnids[c], "0", c, c if c < 3 else (c + 1) % n)
        _write(tmp_path / "imagenet" / "val" / wnids[c], "0", c, c)
    arch = {"img_size": 32, "patch_size": 16, "embed_dim": 32, "depth": 1, "num_heads": 2, "mlp_ratio": 2.0}
    torch.manual_seed(0)
    model = build_classifier(arch, n, kind="finetune", head_init_std=0.02)
    ckpt = tmp_path / "ckpt" / "checkpoint.pth"
    ckpt.parent.mkdir()
    torch.save({"model": model.state_dict(), "classes": wnids, "crop_pct": 1.0, "run": "twelve",
                "meta": {"arch": arch, "method": "maskalign", "run": "twelve"},
                "classifier": classifier_spec(arch, n, "finetune", 32, "avg")}, ckpt)
    cfg = load_config(None, [f"output_dir={tmp_path / 'out'}", "name=twelve", "data.num_workers=0",
                             "runtime.device=cpu", "runtime.amp=none", "benchmarks=[in1k,in_v2,in_sketch]",
                             f"data.root={tmp_path / 'imagenet'}", f"data.imagenet_v2={tmp_path / 'v2'}",
                             f"data.imagenet_sketch={tmp_path / 'sketch'}"], config_dir("robustness"))
    real = robustness.load_classifier

    def with_oracle(path):
        model, saved = real(path)
        model.forward = Oracle(n).forward
        return model, saved

    res = _run_with_oracle(robustness, cfg, ckpt, with_oracle)
    assert res["metrics"]["in1k_top1"] == pytest.approx(100.0)
    assert res["metrics"]["in_v2_top1"] == pytest.approx(50.0)
    assert res["metrics"]["in_sketch_top1"] == pytest.approx(100.0 * 3 / n)
