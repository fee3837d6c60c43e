"""One interface for every pre-training objective: images in, loss and named numbers out.

The engine, launcher, checkpoints and records know nothing method-specific; each objective says
which of its parameters form the encoder that transfer jobs receive (``encoder``), which take no
weight decay, and the two numbers of the paper's Table 1 (forward and reconstruct ratio), computed
from its own config rather than typed by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

from maskalign.models.vit import MaskedViT


@dataclass
class ObjectiveOutput:
    loss: torch.Tensor
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)  # detached scalars; logged, not synced


class Objective(nn.Module):
    """Base class for pre-training objectives.

    Subclasses set ``name`` and ``encoder`` and implement ``forward``. Frozen parts that must not be
    saved (a pretrained teacher) live under the attribute ``teacher``.
    """

    name: str = ""
    encoder: MaskedViT
    num_views: int = 1  # how many augmented views of each image ``forward`` takes

    def forward(self, images: torch.Tensor | list[torch.Tensor]) -> ObjectiveOutput:  # pragma: no cover
        raise NotImplementedError

    @property
    def forward_ratio(self) -> float:
        """Fraction of the image's patches the encoder processes per view."""
        raise NotImplementedError

    @property
    def reconstruct_ratio(self) -> float:
        """Fraction of the image's patches whose content the loss reconstructs."""
        raise NotImplementedError

    @property
    def supervision(self) -> str:
        """What the targets are, as the paper's tables name it (RGB, CLIP-B/16, ...)."""
        raise NotImplementedError

    def no_weight_decay(self) -> set[str]:
        """Names of parameters (besides biases and 1-D tensors) exempt from weight decay."""
        return set()

    def after_optimizer_step(self, progress: float) -> None:
        """Hook after each optimizer step; ``progress`` in [0, 1] over the whole run (LUT's EMA)."""

    def state_dict_to_save(self) -> dict[str, torch.Tensor]:
        """The full pre-training model without any frozen pretrained teacher."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("teacher.")}

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """The exported encoder in timm's key names: decoders, adaptors and DA never go in."""
        return {k: v.detach().clone() for k, v in self.encoder.state_dict().items()}
