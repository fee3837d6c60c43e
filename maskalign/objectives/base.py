"""One interface for every pre-training objective: images in, loss and named numbers out.

The engine, launcher, checkpoints, records, tables and the speed benchmark know nothing
method-specific: everything they ask of an objective is declared here, with its default where a
default is right for most methods. A new method subclasses :class:`Objective`, sets what differs
and registers itself with :func:`maskalign.objectives.register_objective` in its own module.

Required (no default: registration refuses a class that leaves one out):

* ``forward(images)`` -> :class:`ObjectiveOutput`;
* ``from_config(cfg)`` (classmethod): the model for a resolved pre-training config;
* ``forward_ratio`` / ``reconstruct_ratio`` / ``supervision``: the paper's Table 1 columns,
  computed from the objective's own settings rather than typed by hand.

Declared with defaults (class attributes, properties and hooks):

==========================  ==============================  =========================================
hook                        default                         read by
==========================  ==============================  =========================================
``label``                   the registry name               the tables' method column
``extra_method_labels``     ``{}``                          the tables (other method ids it reports)
``recipes``                 ``{}``                          the speed benchmark (paper-recipe configs)
``uses_teacher``            ``False``                       the speed benchmark, config checks
``num_views``               1                               the engine's data pipeline
``find_unused_parameters``  ``False``                       DDP
``check_config(cfg)``       checks nothing                  ``build_objective``, before building
``train_transform(cfg)``    ``None`` (the default crop)     the engine's data pipeline
``method_id``               ``name``                        records and tables
``lr_multiplier``           1.0                             the engine's learning rate
``no_weight_decay()``       empty                           the optimizer's groups
``after_optimizer_step(p)`` nothing                         the engine, after every optimizer step
``state_dict_to_save()``    all but ``teacher.*``           training checkpoints
``encoder_state_dict()``    ``encoder``'s, timm key names   the exported encoder
==========================  ==============================  =========================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn as nn

from maskalign.models.vit import MaskedViT


@dataclass
class ObjectiveOutput:
    loss: torch.Tensor
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)  # detached scalars; logged, not synced


class Objective(nn.Module):
    """Base class for pre-training objectives.

    Subclasses set ``encoder`` (the student that transfer jobs receive) and implement the required
    hooks (module docstring). Frozen parts that must not be saved (a pretrained teacher) live under
    the attribute ``teacher``.
    """

    #: Registry key and default method id; set by ``register_objective``.
    name: ClassVar[str] = ""
    #: How tables print ``name`` ("MAE"); empty means the name itself.
    label: ClassVar[str] = ""
    #: Labels of other method ids this objective's records may carry (MaskAlign reports "fd").
    extra_method_labels: ClassVar[dict[str, str]] = {}
    #: Method id -> the paper's ViT-B recipe (a ``pretrain/configs`` stem), for the speed benchmark.
    recipes: ClassVar[dict[str, str]] = {}
    #: Whether the objective needs a frozen teacher (``teacher.backend`` other than none).
    uses_teacher: ClassVar[bool] = False
    #: How many augmented views of each image ``forward`` takes (a list of tensors when > 1).
    num_views: ClassVar[int] = 1
    #: Whether some trainable parameters get no gradient in a step (DDP must then search for them).
    find_unused_parameters: ClassVar[bool] = False

    encoder: MaskedViT

    # --- construction ------------------------------------------------------------------------
    @classmethod
    def check_config(cls, cfg: Any) -> None:
        """Refuse a wrong setting of this objective's keys with a one-line ``ConfigError``.

        Called by ``build_objective`` before anything is built or downloaded.
        """

    @classmethod
    def from_config(cls, cfg: Any) -> Objective:
        """The objective for a resolved pre-training config (``check_config`` has passed)."""
        raise NotImplementedError

    @classmethod
    def method_labels(cls) -> dict[str, str]:
        """Every method id this objective can report, with the label tables print for it."""
        return {cls.name: cls.label or cls.name, **cls.extra_method_labels}

    # --- what the engine calls ---------------------------------------------------------------
    def forward(self, images: torch.Tensor | list[torch.Tensor]) -> ObjectiveOutput:
        raise NotImplementedError

    def train_transform(self, cfg: Any) -> Callable[[Any], Any] | None:
        """The training transform (PIL image -> tensor, or ``num_views`` tensors); ``None``: the
        default random-resized-crop pipeline of :mod:`maskalign.data.transforms`."""
        return None

    @property
    def lr_multiplier(self) -> float:
        """Factor on the recipe's learning rate (``blr`` times the batch rule)."""
        return 1.0

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

    # --- what records and tables read ----------------------------------------------------------
    @property
    def method_id(self) -> str:
        """The method name records carry (MaskAlign at ratio 0 without DA reports "fd")."""
        return self.name

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


#: Hooks a registered objective must implement itself.
REQUIRED_HOOKS = ("forward", "from_config", "forward_ratio", "reconstruct_ratio", "supervision")


def missing_hooks(cls: type[Objective]) -> list[str]:
    """The required hooks ``cls`` inherits unimplemented from :class:`Objective`."""
    return [h for h in REQUIRED_HOOKS if next(k for k in cls.__mro__ if h in k.__dict__) is Objective]
