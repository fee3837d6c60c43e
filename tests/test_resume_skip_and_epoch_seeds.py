"""A run resumed mid-epoch sees exactly the images it had not seen, and each epoch draws anew per image.

* Resume: the engine (MAE, the tiny demo student, 16 images in batches of 4) is stopped after two
  of an epoch's four iterations at the stop check it makes at every iteration boundary, then run
  again; the (epoch, image) keys the data set is asked for are logged. The stopped run plus the
  resumed one must ask for exactly the keys of an uninterrupted run, each once: a skip counted in
  iterations (2) rather than samples (8) would repeat six images and drop none of the count.
* Seeds: the same image in another epoch gets other draws, image by image (a shuffled order alone
  would also make the batches differ).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch

from maskalign.config import config_dir, load_config
from maskalign.data.keyed import KeyedDataset

CONFIGS = config_dir("pretrain")


@pytest.fixture(scope="module")
def tiny_imagenet(tmp_path_factory: pytest.TempPathFactory, tiny_demo_imagenet: Path) -> Path:
    root = tmp_path_factory.mktemp("resume_imagenet")
    for cls in sorted(p for p in (tiny_demo_imagenet / "train").iterdir() if p.is_dir())[:2]:
        (root / "train" / cls.name).mkdir(parents=True)
        for img in sorted(cls.iterdir())[:8]:
            (root / "train" / cls.name / img.name).symlink_to(img)
    return root


def _cfg(out: Path, root: Path) -> Any:
    return load_config(CONFIGS / "demo_mae.yaml", [
        f"output_dir={out}", "name=r", "data.dataset=imagenet", f"data.root={root}", "data.num_workers=0",
        "optim.total_batch_size=4", "optim.epochs=1", "runtime.device=cpu", "data.decode=cpu"], CONFIGS)


def _log_keys(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    keys: list[tuple[int, int]] = []
    get = KeyedDataset.__getitem__

    def logged(self: KeyedDataset, key: Any) -> Any:
        keys.append(tuple(key) if isinstance(key, tuple) else (0, int(key)))
        return get(self, key)

    monkeypatch.setattr(KeyedDataset, "__getitem__", logged)
    return keys


def test_mid_epoch_resume_sees_each_remaining_image_once(tmp_path: Path, tiny_imagenet: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import maskalign.engine.pretrain as engine
    from maskalign.runfolder.preempt import Stopped

    keys = _log_keys(monkeypatch)
    engine.train(_cfg(tmp_path / "straight", tiny_imagenet))
    straight = list(keys)
    assert len(straight) == 16 and Counter(straight) == Counter(set(straight))  # 16 images, each once

    keys.clear()
    checks = iter(range(100))
    stop_at = 1  # the second boundary check of epoch 0: after iteration 2 of 4

    def stop_once(info: Any) -> bool:
        return next(checks) == stop_at

    monkeypatch.setattr(engine, "_stop_agreed", stop_once)
    with pytest.raises(Stopped):
        engine.train(_cfg(tmp_path / "split", tiny_imagenet))
    first = list(keys)
    assert first == straight[:8]  # two batches of 4
    keys.clear()
    monkeypatch.setattr(engine, "_stop_agreed", lambda info: False)
    engine.train(_cfg(tmp_path / "split", tiny_imagenet))
    assert first + keys == straight


class _Noise(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 12

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.rand(4)  # an "augmentation" drawn from torch's global RNG


def test_each_image_draws_anew_in_each_epoch() -> None:
    ds = KeyedDataset(_Noise(), seed=3)
    for i in range(len(ds)):
        assert torch.equal(ds[(1, i)], ds[(1, i)])  # a key's draw is fixed
        assert not torch.equal(ds[(1, i)], ds[(2, i)]), i  # the same image, another epoch: other draws
        assert not torch.equal(ds[(1, i)], ds[(1, (i + 1) % len(ds))])
    assert not torch.equal(KeyedDataset(_Noise(), seed=4)[(1, 0)], ds[(1, 0)])


def test_each_image_draws_anew_through_the_engines_loader() -> None:
    """Through ``build_loader`` as the engine uses it: per image index, epoch 1 and 2 differ."""
    from maskalign.data.decode import build_loader

    class Indexed(_Noise):
        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            return torch.rand(4), i

    draws = {}
    for epoch in (1, 2):
        loader, sampler = build_loader(Indexed(), 4, rank=0, world=1, seed=3, num_workers=0,
                                       device=torch.device("cpu"), decode="cpu")
        sampler.set_epoch(epoch)
        draws[epoch] = {int(i): x for xs, idx in loader for x, i in zip(xs, idx)}
    assert set(draws[1]) == set(draws[2]) == set(range(12))
    for i in range(12):
        assert not torch.equal(draws[1][i], draws[2][i]), i
