"""Training objectives: closed-loop rollout cost through the plant, and imitation of an expert.

Both are normalised to be O(1) at the optimum (the rollout cost is divided by the LQR optimum on the
same initial states, the imitation error by the expert's action energy): the automatic optimisers'
majorisers assume a loss of unit scale.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

import plants
from lipnet.exceptions import LipnetValue

__all__ = ["stabilised", "RolloutObjective", "ImitationObjective", "DemoImitation", "LocalGain", "make_objective"]


def stabilised(plant, roll: plants.Rollout, tol: float = 0.05) -> torch.Tensor:
    """Which rollouts end stabilised: a finite cost and a final deviation from x_eq (periodic angles wrapped),
    divided by the evaluation box, of norm below `tol` (the success test of every lipnet report)."""
    final = roll.states[-1]
    scale = torch.as_tensor(np.abs(np.asarray(plant.init_eval.scale, dtype=float)), dtype=final.dtype,
                            device=final.device).clamp_min(1e-9)
    return torch.isfinite(roll.cost) & ((plant.deviation(final) / scale).norm(dim=-1) < tol)


class RolloutObjective:
    """Mean closed-loop cost over a batch of initial states, divided by the mean LQR optimum x0ᵀPx0.

    With `stabilised_only`, the mean runs over the starts the controller stabilises (all of them where it
    stabilises none). That is the rollout phase after the MPC expert: there the starts the controller loses cost
    10³–10⁵× the others, their curvature held sphere-mm's steps at θ ~ 1e-7–1e-10 and the phase never moved the
    imitated controller (quadrotor, 3 seeds); which starts it stabilises is the imitation's job, guarded by the
    loop's validated keep-best.
    """

    name = "rollout"

    def __init__(self, plant, lqr, horizon: int, terminal: str = "lqr", compile: bool = False,
                 stabilised_only: bool = False):
        self.plant, self.lqr, self.horizon = plant, lqr, int(horizon)
        self.stabilised_only = bool(stabilised_only)
        if terminal not in ("lqr", "none"):
            raise LipnetValue(f"terminal must be 'lqr' or 'none', got {terminal!r}")
        self.terminal = lqr.P if terminal == "lqr" else None  # the matrix: no LQR re-solve per step
        self.compile = compile
        self._compiled: tuple[Callable, plants.CompiledRollout] | None = None
        self._kept_for: tuple[torch.Tensor, torch.Tensor] | None = None

    def _rollout(self, policy: Callable, x0: torch.Tensor) -> plants.Rollout:
        if not self.compile:
            return plants.rollout(self.plant, policy, x0, horizon=self.horizon, terminal=self.terminal)
        if self._compiled is None or self._compiled[0] is not policy:
            self._compiled = (policy, plants.CompiledRollout(self.plant, policy))
        return self._compiled[1](x0, horizon=self.horizon, terminal=self.terminal)

    def __call__(self, policy: Callable, x0: torch.Tensor) -> torch.Tensor:
        roll = self._rollout(policy, x0)
        if self.stabilised_only:
            keep = self._kept(x0, roll)
            if keep.any():
                return roll.cost[keep].mean() / self.lqr.cost(x0[keep]).mean().clamp_min(1e-12)
        return roll.cost.mean() / self.lqr.cost(x0).mean().clamp_min(1e-12)

    def _kept(self, x0: torch.Tensor, roll: plants.Rollout) -> torch.Tensor:
        """The starts to average over, fixed by the first evaluation on this batch of starts (one optimiser step
        evaluates the same `x0` several times). Re-deciding them at every trial point made the loss discontinuous:
        a trial step that lost or caught a start moved the loss by that start's share, which sphere-mm's decrease
        check reads as curvature (its β then only grows)."""
        if self._kept_for is not None and self._kept_for[0] is x0:
            return self._kept_for[1]
        with torch.no_grad():
            keep = stabilised(self.plant, roll)
        self._kept_for = (x0, keep)
        return keep


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


class DemoImitation:
    """Mean squared error to recorded expert actions on a minibatch of demonstration pairs (indices given per
    step, so that every evaluation within one optimiser step sees the same minibatch), divided by the
    demonstrations' action energy around `u_eq`."""

    name = "imitation"

    def __init__(self, plant, states: torch.Tensor, actions: torch.Tensor, batch: int = 512):
        self.states, self.actions, self.batch = states, actions, int(batch)
        u_eq = torch.as_tensor(plant.u_eq, dtype=actions.dtype)
        self.scale = ((actions - u_eq) ** 2).sum(-1).mean().clamp_min(1e-12)

    def extend(self, states: torch.Tensor, actions: torch.Tensor) -> None:
        """Add (state, action) pairs (DAgger); the normalisation stays that of the first demonstrations."""
        self.states = torch.cat([self.states, states.to(self.states.dtype)])
        self.actions = torch.cat([self.actions, actions.to(self.actions.dtype)])

    def sample(self, generator: torch.Generator) -> torch.Tensor:
        """The indices of one minibatch."""
        return torch.randint(len(self.states), (min(self.batch, len(self.states)),), generator=generator)

    def __call__(self, policy: Callable, idx: torch.Tensor) -> torch.Tensor:
        x, u = self.states[idx], self.actions[idx]
        return ((policy(x) - u) ** 2).sum(-1).mean() / self.scale


class LocalGain:
    """An objective plus the controller's gain error at the equilibrium: `‖(∂π/∂x(x_eq) + K) S‖²_F / ‖K S‖²_F`.

    Where the actuators do not saturate, the optimal feedback of a smooth plant linearises to the LQR gain at its
    equilibrium; a wide-region objective (a swing-up) barely weighs those small states, and left alone training
    settles for a lazy gain there (pendulum swing-up: 0.6–0.7 × K, 5 × the saturated LQR's cost on the states it
    stabilises). S is the evaluation box (`plant.eval_box()`), so every state direction counts in its own units.
    """

    def __init__(self, objective, plant, K, weight: float = 1.0):
        self.objective, self.weight = objective, float(weight)
        self.name = getattr(objective, "name", "objective")
        self.x_eq = torch.as_tensor(plant.x_eq, dtype=torch.float64)
        self.scale = torch.as_tensor(plant.eval_box(), dtype=torch.float64)
        ks = torch.as_tensor(K, dtype=torch.float64) * self.scale
        self.target, self.norm = ks, ks.pow(2).sum().clamp_min(1e-12)
        for name in ("sample", "extend"):  # a demonstration set's minibatches and DAgger data pass through
            if hasattr(objective, name):
                setattr(self, name, getattr(objective, name))

    def gain_error(self, policy: Callable, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """The normalised squared gain error (differentiable in the policy's parameters)."""
        outer = torch.is_grad_enabled()  # an optimiser's trial evaluations run under no_grad
        with torch.enable_grad():
            x = self.x_eq.to(dtype).clone().requires_grad_(True)
            u = policy(x[None])[0]
            rows = [torch.autograd.grad(u[i], x, create_graph=outer, retain_graph=True)[0] for i in range(len(u))]
        js = torch.stack(rows) * self.scale.to(dtype)
        err = (js + self.target.to(dtype)).pow(2).sum() / self.norm.to(dtype)
        return err if outer else err.detach()

    def __call__(self, policy: Callable, inputs) -> torch.Tensor:
        loss = self.objective(policy, inputs)
        return loss + self.weight * self.gain_error(policy, loss.dtype)


def make_objective(name: str, plant, lqr, horizon: int, terminal: str = "lqr", expert: Callable | None = None,
                   compile: bool = False, stabilised_only: bool = False):
    """The named objective (`rollout` or `imitation`) for `plant`; `compile` fuses the rollout's steps, and
    `stabilised_only` averages the rollout cost over the starts the controller stabilises."""
    if name == "rollout":
        return RolloutObjective(plant, lqr, horizon, terminal, compile=compile, stabilised_only=stabilised_only)
    if name == "imitation":
        return ImitationObjective(plant, expert or lqr.policy)
    raise LipnetValue(f"unknown objective {name!r}; valid: rollout, imitation")
