"""A trajectory-optimising expert computed on the plant itself, for tasks where the saturated LQR fails.

`MPCExpert` is model-predictive path-integral control (MPPI; Williams et al., "Information theoretic MPC for
model-based reinforcement learning", ICRA 2017): at every step it samples perturbed action sequences over a
receding horizon, rolls them out through `plant.step` in one batch, and averages them with weights
`softmax(−cost / λ)`. It needs no linearisation and no gradient, so it swings a torque-limited pendulum up where
backpropagation through the rollout stalls in the swinging local minimum (measured: 39 % upright after 600 steps
of full-horizon BPTT, 100 % after imitating this expert). Its closed-loop trajectories are the demonstrations the
controller imitates before its rollout phase.

Nothing here is tuned per plant: the horizon is a fixed time (`horizon_s`), the exploration noise a fixed share of
each actuator's range (or of the LQR's action scale where unlimited), and λ is set per state from the spread of
the sampled costs, so the weights do not depend on the cost's units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.optimize
import torch

import plants
from plants.rollout import Rollout, run_loop

__all__ = ["MPCExpert", "Demonstrations", "trajectory_optimum"]


@dataclass
class Demonstrations:
    """Closed-loop expert data: `states` `[T, N, n_x]`, `actions` `[T, N, n_u]`, final states `[N, n_x]`."""

    states: torch.Tensor
    actions: torch.Tensor
    final: torch.Tensor

    def pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every (state, action) pair, flattened to `[T·N, n_x]`, `[T·N, n_u]`."""
        return self.states.reshape(-1, self.states.shape[-1]), self.actions.reshape(-1, self.actions.shape[-1])


class MPCExpert:
    """MPPI on `plant` with its own stage cost (see the module docstring).

    Parameters
    ----------
    plant : a `plants.Plant`.
    action_scale : per-actuator scale of the exploration noise where the actuator has no limits.
    horizon_s : receding horizon in seconds (default 1.5 s, at least 10 steps).
    samples : action sequences per state and iteration.
    iterations : MPPI refinements per control step.
    noise : exploration std as a share of each actuator's half-range (or of `action_scale`).
    temperature : λ as a share of the per-state spread (mean − min) of the sampled costs.
    guide : a feedback policy (the saturated LQR) whose closed-loop action sequence from each state is one more
        candidate at every iteration, kept exactly wherever it is the cheapest: the expert is then never worse
        than it over the horizon, and acts like it near the equilibrium, where averaging perturbed sequences
        leaves a noisy residual.
    """

    def __init__(self, plant, action_scale=None, horizon_s: float = 1.5, samples: int = 128, iterations: int = 2,
                 noise: float = 0.5, temperature: float = 0.1, generator: torch.Generator | None = None,
                 guide=None):
        self.plant, self.guide = plant, guide
        self.T = max(10, int(round(horizon_s / plant.dt)))
        self.K, self.iterations, self.temperature = int(samples), int(iterations), float(temperature)
        lo = plant.u_low if plant.u_low is not None else np.full(plant.n_u, -np.inf)
        hi = plant.u_high if plant.u_high is not None else np.full(plant.n_u, np.inf)
        fallback = np.ones(plant.n_u) if action_scale is None else np.asarray(action_scale, float)
        half = np.where(np.isfinite(lo) & np.isfinite(hi), (hi - lo) / 2, fallback)
        self.sigma = noise * half
        self.generator = generator

    def _refine(self, x: torch.Tensor, U: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One MPPI iteration for every state in `x` around the nominal sequences `U` `[N, T, n_u]`.

        Returns the new nominal sequences and, with a guide, a mask of the states where the guide's own sequence
        was the cheapest candidate (there its exact sequence is kept rather than a noisy average).
        """
        plant, K = self.plant, self.K
        N, T, m = U.shape
        sigma = torch.as_tensor(self.sigma, dtype=x.dtype)
        eps = torch.randn(N, K, T, m, generator=self.generator, dtype=x.dtype) * sigma
        eps[:, 0] = 0  # the nominal sequence itself is always a candidate
        Us = plant.clip(U[:, None] + eps)
        if self.guide is not None:
            Us[:, 1] = self._guided(x, T)
        z = x[:, None].expand(N, K, x.shape[-1]).reshape(N * K, -1)
        cost = torch.zeros(N * K, dtype=x.dtype)
        for t in range(T):
            u = Us[:, :, t].reshape(N * K, m)
            cost = cost + plant.stage_cost(z, u)
            z = plant.step(z, u)
        cost = torch.nan_to_num(cost.reshape(N, K), nan=math.inf, posinf=math.inf)
        best = cost.min(1, keepdim=True).values
        finite_mean = torch.where(torch.isfinite(cost), cost, best).mean(1, keepdim=True)
        lam = self.temperature * (finite_mean - best).clamp_min(1e-12)
        w = torch.softmax(-(cost - best) / lam, dim=1)
        U_new = (w[:, :, None, None] * Us).sum(1)
        if self.guide is None:
            return U_new, None
        guide_best = cost[:, 1] <= best[:, 0]
        return torch.where(guide_best[:, None, None], Us[:, 1], U_new), guide_best

    def _guided(self, x: torch.Tensor, T: int) -> torch.Tensor:
        """The guide policy's closed-loop actions from `x` over `T` steps, `[N, T, n_u]`."""
        us = []
        for _ in range(T):
            u = self.plant.clip(self.guide(x))
            us.append(u)
            x = self.plant.step(x, u)
        return torch.stack(us, dim=1)

    @torch.no_grad()
    def label(self, x: torch.Tensor) -> torch.Tensor:
        """The expert's action at each state of `x` (DAgger relabelling): MPPI refined from the guide's sequence."""
        U = self._guided(x, self.T) if self.guide is not None else self.plant.clip(
            torch.as_tensor(self.plant.u_eq, dtype=x.dtype).expand(x.shape[0], self.T, self.plant.n_u).clone())
        for _ in range(self.iterations + 1):
            U, _ = self._refine(x, U)
        return U[:, 0]

    @torch.no_grad()
    def demonstrations(self, x0: torch.Tensor, steps: int) -> Demonstrations:
        """Run the expert in closed loop from every row of `x0` for `steps` steps."""
        plant = self.plant
        x = x0.detach().clone()
        U = plant.clip(torch.as_tensor(plant.u_eq, dtype=x.dtype).expand(x.shape[0], self.T, plant.n_u).clone())
        xs, us = [], []
        for _ in range(steps):
            for _ in range(self.iterations):
                U, _ = self._refine(x, U)
            u = U[:, 0]
            xs.append(x)
            us.append(u)
            x = plant.step(x, u)
            U = torch.cat([U[:, 1:], U[:, -1:]], dim=1)  # warm start: shift the plan by one step
        return Demonstrations(torch.stack(xs), torch.stack(us), x)


def _squash(plant, dtype=torch.float64):
    """`h`, `h⁻¹`: a smooth bijection from ℝ onto the open actuator range (identity where a side is unlimited)."""
    lo = torch.as_tensor(plant.u_low if plant.u_low is not None else np.full(plant.n_u, -np.inf), dtype=dtype)
    hi = torch.as_tensor(plant.u_high if plant.u_high is not None else np.full(plant.n_u, np.inf), dtype=dtype)
    limited = torch.isfinite(lo) & torch.isfinite(hi)
    c = torch.where(limited, (hi + lo) / 2, 0.0)
    r = torch.where(limited, (hi - lo) / 2, 1.0)

    def h(w):
        return torch.where(limited, c + r * torch.tanh((w - c) / r), w)

    def h_inv(u):
        return torch.where(limited, c + r * torch.atanh(((u - c) / r).clamp(-1 + 1e-9, 1 - 1e-9)), u)
    return h, h_inv


def trajectory_optimum(plant, lqr, x0: torch.Tensor, inits: list[Rollout], P=None, iterations: int = 300) -> Rollout:
    """Per start, the cheapest action sequence L-BFGS finds from each of `inits` (rollouts from `x0`), in float64.

    The actions are parametrised as `u_t = h(−K(x_t − x_eq) + v_t)`, `h` a smooth bijection onto the open actuator
    range: every sequence inside the limits has exactly one `v`, so the optimum over `v` is the open-loop optimum,
    but the LQR feedback keeps long unstable rollouts well conditioned (plain open-loop L-BFGS-B stalls on them)
    and no kink of a hard clip breaks the line search. Each init is reproduced (to 1e-9 of the limits) by its `v`,
    and kept per start where the search did not improve on it. The starts are independent, so one joint problem
    over their summed cost solves all. Returns the kept rollouts (`states`, `actions`, `cost`)."""
    x0 = x0.double()
    lin = plants.LQRPolicy(lqr.K, plant.x_eq, plant.u_eq, clip=False, periodic=getattr(plant, "periodic", ()))
    h, h_inv = _squash(plant)
    T, N, m = inits[0].actions.shape

    def run(V):
        def closed_loop(x, t):
            u = h(lin(x) + V[t])
            return plant.step(x, u), u
        return run_loop(plant, closed_loop, x0, T, P)

    def fun(z: np.ndarray):
        V = torch.tensor(z.reshape(T, N, m), requires_grad=True)
        total = torch.nan_to_num(run(V).cost, nan=1e12, posinf=1e12).sum()
        total.backward()
        return total.item(), V.grad.numpy().ravel().copy()

    best = None
    for roll in inits:
        with torch.no_grad():
            v0 = h_inv(roll.actions.double()) - lin(roll.states[:-1].double().reshape(-1, plant.n_x)).reshape(T, N, m)
        res = scipy.optimize.minimize(fun, v0.numpy().ravel(), jac=True, method="L-BFGS-B",
                                      options={"maxiter": iterations})
        with torch.no_grad():
            found = run(torch.as_tensor(res.x.reshape(T, N, m)))
        for cand in (Rollout(roll.states.double(), roll.actions.double(), roll.cost.double()), found):
            cost = torch.nan_to_num(cand.cost, nan=math.inf)
            if best is None:
                best = Rollout(cand.states.clone(), cand.actions.clone(), cost)
                continue
            take = cost < best.cost
            best = Rollout(torch.where(take[None, :, None], cand.states, best.states),
                           torch.where(take[None, :, None], cand.actions, best.actions),
                           torch.where(take, cost, best.cost))
    return best
