"""The protocol constants of the robustness evaluation: class subsets, label spaces, mCE, masked top-k."""

from __future__ import annotations

import math

import pytest
import torch

from maskalign.transfer import label_space as ls
from maskalign.transfer.metrics import (
    ALEXNET_ERR,
    CORRUPTIONS,
    corruption_error,
    corruption_errors,
    mean_corruption_error,
    topk_correct,
)


@pytest.mark.parametrize("subset, first", [("imagenet_a", [6, 11, 13]), ("imagenet_r", [1, 2, 4])])
def test_official_index_lists(subset: str, first: list[int]) -> None:
    indices = [int(x) for x in ls.read_class_list(f"{subset}_indices")]
    wnids = ls.read_class_list(f"{subset}_wnids")
    all_wnids = ls.read_class_list("imagenet_wnids")
    assert len(indices) == len(set(indices)) == 200
    assert indices == sorted(indices) and indices[:3] == first
    assert len(all_wnids) == 1000 and all_wnids == sorted(all_wnids)
    assert wnids == sorted(wnids) and len(wnids) == 200
    assert [all_wnids[i] for i in indices] == wnids


@pytest.mark.parametrize("subset", ["imagenet_a", "imagenet_r"])
def test_imagenet1k_space_derives_the_official_columns(subset: str) -> None:
    space = ls.imagenet1k()
    assert space.num_classes == 1000
    assert space.subset_indices(subset) == [int(x) for x in ls.read_class_list(f"{subset}_indices")]
    c2i = space.subset_class_to_idx(subset)
    # target i (sorted wnid folders, as ImageFolder numbers them) is logit column indices[i]
    assert sorted(c2i, key=c2i.get) == sorted(c2i)
    assert ls.for_classes(space.wnids) is space


def test_demo_space_has_its_own_subsets() -> None:
    from maskalign.data.demo_world.shapes import WNIDS

    space = ls.for_classes(WNIDS)
    assert space.name == "demo" and space.num_classes == len(WNIDS)
    for subset in ("imagenet_a", "imagenet_r"):
        idx = space.subset_indices(subset)
        assert 0 < len(idx) < len(WNIDS) and idx == sorted(idx)
        assert [space.wnids[i] for i in idx] == list(space.subset_wnids(subset))
    assert space.subset_indices("imagenet_a") != space.subset_indices("imagenet_r")
    # ImageNet-V2 layout: folder "10" is class 10, not the string-sorted third folder
    assert space.index_folders() == {str(i): i for i in range(len(WNIDS))}


def test_custom_space_keeps_the_shared_classes() -> None:
    real = ls.imagenet1k()
    wnids = real.wnids[:100]
    space = ls.for_classes(wnids)
    assert space.name == "custom"
    expected = [i for i in map(int, ls.read_class_list("imagenet_a_indices")) if i < 100]
    assert space.subset_indices("imagenet_a") == expected
    with pytest.raises(ls.DataError):
        ls.for_classes(["n00000001", "n00000002"]).subset_indices("imagenet_r")


def test_alexnet_errors_give_mce_100() -> None:
    assert list(ALEXNET_ERR) == list(CORRUPTIONS) and len(CORRUPTIONS) == 15
    errors = {c: [ALEXNET_ERR[c]] * 5 for c in CORRUPTIONS}
    ce = corruption_errors(errors)
    assert all(v == pytest.approx(100.0) for v in ce.values())
    assert mean_corruption_error(ce) == pytest.approx(100.0)


def test_mce_hand_computation() -> None:
    # every corruption at 50% error on each severity, except gaussian_noise: 10,20,30,40,50% -> mean 30%
    errors = {c: [0.5] * 5 for c in CORRUPTIONS}
    errors["gaussian_noise"] = [0.1, 0.2, 0.3, 0.4, 0.5]
    ce = corruption_errors(errors)
    assert ce["gaussian_noise"] == pytest.approx(100 * 0.3 / 0.886428)
    assert ce["brightness"] == pytest.approx(100 * 0.5 / 0.564592)
    by_hand = (100 * 0.3 / 0.886428 + sum(100 * 0.5 / ALEXNET_ERR[c] for c in CORRUPTIONS[1:])) / 15
    assert mean_corruption_error(ce) == pytest.approx(by_hand)
    # keyed by name: the order the errors come in does not matter
    assert corruption_errors(dict(reversed(list(errors.items())))) == ce


def test_partial_mce_is_nan_and_extras_refused() -> None:
    errors = {c: [0.5] * 5 for c in CORRUPTIONS if c != "fog"}
    ce = corruption_errors(errors)
    assert "fog" not in ce and len(ce) == 14
    assert math.isnan(mean_corruption_error(ce))
    with pytest.raises(KeyError):
        corruption_errors({"speckle_noise": [0.5] * 5})
    with pytest.raises(ValueError):
        corruption_error([0.5] * 4, "fog")


def test_masked_topk() -> None:
    logits = torch.tensor([[0.0, 5.0, 1.0, 2.0, 3.0],
                           [9.0, 0.0, 1.0, 2.0, 3.0]])
    # full space: sample 0's target 4 is 2nd best, sample 1's target 0 is best
    assert topk_correct(logits, torch.tensor([4, 0]), (1, 5)).tolist() == [1, 2]
    # restricted to columns [2, 3, 4]: sample 0 -> column 4 wins (target 2 of the subset),
    # sample 1 -> column 4 wins too, but its target is subset position 0 (column 2)
    hits = topk_correct(logits, torch.tensor([2, 0]), (1, 5), indices=[2, 3, 4])
    assert hits.tolist() == [1, 2]  # top-5 capped at the 3 competing classes
