"""1-Lipschitz activations: ReLU, tanh, GroupSort (MaxMin); and actuator saturations."""

from __future__ import annotations

import torch
from torch import nn

from lipnet.exceptions import LipnetValue

__all__ = ["GroupSort", "make_activation", "ACTIVATIONS", "SLOPE_RESTRICTED"]


class GroupSort(nn.Module):
    """Sort within groups of 2 (MaxMin): 1-Lipschitz and gradient-norm preserving; needs an even width."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x[..., 0::2], x[..., 1::2]
        return torch.stack((torch.maximum(a, b), torch.minimum(a, b)), dim=-1).flatten(-2)


ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "groupsort": GroupSort}
# Activations that act elementwise with slope in [0, 1] (what LipSDP's multipliers assume).
SLOPE_RESTRICTED = {"relu": (0.0, 1.0), "tanh": (0.0, 1.0)}


def make_activation(name: str) -> nn.Module:
    """Build the named 1-Lipschitz activation (`relu`, `tanh`, `groupsort`)."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise LipnetValue(f"unknown activation {name!r}; valid: {', '.join(ACTIVATIONS)}") from None
