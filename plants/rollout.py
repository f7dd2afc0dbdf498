"""Batched closed-loop rollouts with their quadratic cost, under autograd or `torch.no_grad`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .base import Plant
from .errors import PlantRuntimeError
from .options import MAX_HORIZON, positive_int

__all__ = ["rollout", "Rollout"]


@dataclass
class Rollout:
    """`states` `[T+1, b, n_x]`, `actions` `[T, b, n_u]` (as applied), `cost` `[b]` (stage sum + terminal)."""

    states: torch.Tensor
    actions: torch.Tensor
    cost: torch.Tensor


def _terminal_matrix(plant: Plant, terminal) -> np.ndarray | None:
    if terminal is None:
        return None
    if isinstance(terminal, str):
        if terminal != "lqr":
            raise ValueError(f"terminal must be None, a matrix P or 'lqr', got {terminal!r}")
        from .lqr_design import lqr

        return lqr(plant).P
    P = np.asarray(terminal.detach().cpu() if isinstance(terminal, torch.Tensor) else terminal, dtype=float)
    if P.shape != (plant.n_x, plant.n_x):
        raise ValueError(f"terminal matrix must be [{plant.n_x}, {plant.n_x}], got {P.shape}")
    return P


def rollout(plant: Plant, policy: Callable[[torch.Tensor], torch.Tensor], x0: torch.Tensor,
            horizon: int | None = None, terminal=None, clip: bool = True) -> Rollout:
    """Run `x_{t+1} = plant.step(x_t, u_t)`, `u_t = policy(x_t)` for `horizon` steps (default `plant.horizon`).

    Parameters
    ----------
    plant, policy : the plant and a callable `[b, n_x] → [b, n_u]` (e.g. a `Controller`, `lqr(plant).policy`).
    x0 : `[b, n_x]` initial states (its dtype and device are used throughout).
    terminal : None, a matrix `P` (adds `(x_T−x_eq)ᵀ P (x_T−x_eq)`), or `"lqr"` (P of `plants.lqr(plant)`).
    clip : apply the plant's actuator limits to the policy's output (what real actuators do).

    The cost is `Σ_{t<T} stage_cost(x_t, u_t)` plus the terminal term; differentiable w.r.t. the policy
    parameters and `x0`. `plants.CompiledRollout` runs the same loop with each step fused by `torch.compile`.
    """
    T, P = prepare(plant, x0, horizon, terminal)
    limited = clip and (plant.u_low is not None or plant.u_high is not None)

    def closed_loop(x: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        u = policy(x)
        if t == 0:
            check_action(plant, x0, u)
        if limited:
            u = plant.clip(u)
        return plant.step(x, u), u

    return run_loop(plant, closed_loop, x0, T, P)


def prepare(plant: Plant, x0: torch.Tensor, horizon: int | None, terminal) -> tuple[int, np.ndarray | None]:
    """The horizon and terminal matrix of a rollout, with clear errors for a bad `x0` or `horizon`."""
    T = plant.horizon if horizon is None else horizon
    if x0.dim() != 2 or x0.shape[1] != plant.n_x:
        raise ValueError(f"x0 must be [batch, {plant.n_x}], got {tuple(x0.shape)}")
    # 0 steps is a valid (empty) rollout; otherwise the plants' own bound applies (10⁸ steps would just hang)
    T = 0 if T == 0 else positive_int(T, "horizon", MAX_HORIZON)
    return T, _terminal_matrix(plant, terminal)


def check_action(plant: Plant, x0: torch.Tensor, u: torch.Tensor) -> None:
    """Raise a clear error when a policy's output is not `[b, n_u]` (before the plant sees it)."""
    if u.dim() != 2 or tuple(u.shape) != (x0.shape[0], plant.n_u):
        raise ValueError(f"policy must map [b, {plant.n_x}] to [b, {plant.n_u}], got {tuple(u.shape)}")


def run_loop(plant: Plant, closed_loop: Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]],
             x0: torch.Tensor, T: int, P: np.ndarray | None) -> Rollout:
    """The rollout loop shared by the eager and the compiled rollouts: `closed_loop(x, t) -> (x_next, u)`."""
    xs, us = [x0], []
    x = x0
    for t in range(T):
        try:
            x, u = closed_loop(x, t)
        except PlantRuntimeError as e:  # the user's plant code failed: say at which step of the rollout
            if e.step is not None:
                raise
            raise e.at_step(t) from (e.__cause__ or e)
        us.append(u)
        xs.append(x)
    states = torch.stack(xs)
    actions = torch.stack(us) if us else x0.new_zeros((0, x0.shape[0], plant.n_u))
    # One vectorised cost evaluation over all steps instead of T small ones.
    cost = plant.stage_cost(states[:-1], actions).sum(0) if T else x0.new_zeros(x0.shape[0])
    if P is not None:
        dx = plant.deviation(states[-1])
        cost = cost + ((dx @ torch.as_tensor(P, dtype=x0.dtype, device=x0.device)) * dx).sum(-1)
    return Rollout(states=states, actions=actions, cost=cost)
