"""Training objectives: closed-loop rollout cost through the plant, and imitation of an expert.

Both are normalised to be O(1) at the optimum (the rollout cost is divided by the LQR optimum on the
same initial states, the imitation error by the expert's action energy): the automatic optimisers'
majorisers assume a loss of unit scale.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

import plants

__all__ = ["RolloutObjective", "ImitationObjective", "make_objective"]


class RolloutObjective:
    """Mean closed-loop cost over a batch of initial states, divided by the mean LQR optimum x0ᵀPx0."""

    name = "rollout"

    def __init__(self, plant, lqr, horizon: int, terminal: str = "lqr"):
        self.plant, self.lqr, self.horizon = plant, lqr, int(horizon)
        if terminal not in ("lqr", "none"):
            raise ValueError(f"terminal must be 'lqr' or 'none', got {terminal!r}")
        self.terminal = lqr.P if terminal == "lqr" else None  # the matrix: no LQR re-solve per step

    def __call__(self, policy: Callable, x0: torch.Tensor) -> torch.Tensor:
        roll = plants.rollout(self.plant, policy, x0, horizon=self.horizon, terminal=self.terminal)
        return roll.cost.mean() / self.lqr.cost(x0).mean().clamp_min(1e-12)


class ImitationObjective:
    """Mean squared error to an expert's actions (LQR by default), divided by the expert's action energy."""

    name = "imitation"

    def __init__(self, plant, expert: Callable):
        self.plant, self.expert = plant, expert

    def __call__(self, policy: Callable, x0: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = self.expert(x0)
            scale = ((target - torch.as_tensor(self.plant.u_eq, dtype=x0.dtype)) ** 2).sum(-1).mean()
        return ((policy(x0) - target) ** 2).sum(-1).mean() / scale.clamp_min(1e-12)


def make_objective(name: str, plant, lqr, horizon: int, terminal: str = "lqr", expert: Callable | None = None):
    """The named objective (`rollout` or `imitation`) for `plant`."""
    if name == "rollout":
        return RolloutObjective(plant, lqr, horizon, terminal)
    if name == "imitation":
        return ImitationObjective(plant, expert or lqr.policy)
    raise ValueError(f"unknown objective {name!r}; valid: rollout, imitation")
