"""LARS (You et al. 2017), the optimizer of MAE's linear-probing protocol.

MAE trains the linear head with LARS at batch 16384 (``main_linprobe.py``, ``util/lars.py``):
SGD with momentum where each tensor's update is rescaled by ``trust * ||w|| / ||update||``.
Biases and other 1-D tensors are exempt from both weight decay and the rescaling.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch


class LARS(torch.optim.Optimizer):
    """Momentum SGD with layer-wise trust-ratio scaling.

    Args:
        params: tensors or parameter groups.
        lr: learning rate (MAE: ``blr * batch / 256``, blr 0.1).
        weight_decay: added to the gradient of tensors with ``ndim > 1`` before the trust ratio.
        momentum: heavy-ball momentum.
        trust_coefficient: ``eta`` of the trust ratio ``eta * ||w|| / ||g + wd * w||``.
    """

    def __init__(self, params: Iterable, lr: float = 0.0, weight_decay: float = 0.0, momentum: float = 0.9,
                 trust_coefficient: float = 0.001) -> None:
        defaults = {"lr": lr, "weight_decay": weight_decay, "momentum": momentum,
                    "trust_coefficient": trust_coefficient}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                update = p.grad
                if p.ndim > 1:
                    update = update.add(p, alpha=group["weight_decay"])
                    w_norm, u_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(update)
                    one = torch.ones_like(w_norm)
                    ratio = torch.where(w_norm > 0,
                                        torch.where(u_norm > 0, group["trust_coefficient"] * w_norm / u_norm, one),
                                        one)
                    update = update.mul(ratio)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                mu = state["mu"]
                mu.mul_(group["momentum"]).add_(update)
                p.add_(mu, alpha=-group["lr"])
        return loss
