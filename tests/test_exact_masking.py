"""Visible-token counts and per-sample masks, against the official code's arithmetic.

The official MaskAlign, MAE and CrossMAE code keep ``int(L * (1 - mask_ratio))`` patches
(truncation, not rounding): ViT-B/16 at 224 px has 196 patches, 58 visible at 70 % (58.8
truncated), 49 at 75 %, and 156 at 20 % (156.8).
"""

from __future__ import annotations

import pytest
import torch

from maskalign.masking import attentive_masking, num_visible, random_masking


@pytest.mark.parametrize("ratio, visible", [(0.7, 58), (0.75, 49), (0.2, 156), (0.4, 117), (0.0, 196)])
def test_visible_count_truncates_like_the_official_code(ratio: float, visible: int) -> None:
    assert num_visible(196, ratio) == visible
    assert random_masking(2, 196, ratio).shape == (2, visible)
    attn = torch.rand(2, 196)
    assert attentive_masking(attn, ratio, generator=torch.Generator().manual_seed(0)).shape == (2, visible)


def test_random_masks_are_drawn_per_sample() -> None:
    # MAE's per-sample shuffle: every image of a batch gets its own visible set.
    torch.manual_seed(0)
    keep = random_masking(8, 196, 0.75)
    sets = {tuple(sorted(row.tolist())) for row in keep}
    assert len(sets) == 8
