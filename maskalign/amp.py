"""The mixed-precision policy every training and evaluation loop shares.

``amp`` is a config value: ``auto`` runs bf16 autocast on CUDA and full precision elsewhere (CPU
bf16 is slower than fp32 on most CPUs), ``bf16`` asks for bf16 autocast on any device, ``none``
never autocasts. bf16 needs no loss scaling, so no ``GradScaler`` goes with it.
"""

from __future__ import annotations

import torch

from maskalign.errors import UserError

AMP_MODES = ("auto", "bf16", "none")


def autocast(device: torch.device, amp: str) -> torch.autocast:
    """The autocast context for ``device`` under the policy ``amp`` (module docstring)."""
    if amp not in AMP_MODES:
        raise UserError(f"amp: unknown {amp!r}; use {', '.join(AMP_MODES)}")
    if amp == "none" or (amp == "auto" and device.type != "cuda"):
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=torch.bfloat16)
