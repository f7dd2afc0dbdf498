"""Closed-loop rollouts whose step (policy, actuator clip, plant) is fused by `torch.compile`, forward and backward."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch

from .base import Plant
from .rollout import Rollout, check_action, prepare, run_loop

__all__ = ["CompiledRollout"]


class CompiledRollout:
    """`plants.rollout(plant, policy, ...)` with each closed-loop step compiled into a few fused kernels.

    Same states, actions and cost as `plants.rollout` (to rounding). Eager PyTorch runs every small operation
    of the policy, the clip and the RK4 stages as its own kernel and autograd node (≈80 per cart-pole step);
    compiling the whole step `x ↦ (plant.step(x, clip(policy(x))), u)` leaves the policy's matrix products
    and one or two fused loops forward and backward: on a 2-core CPU, forward+backward 1.6–1.9× `plants.rollout`
    at batch 4096 and 2.8× at batch 128 (`benchmarks/rollout.py`).

    Limits, all by design of `torch.compile`: the first call for each batch size, dtype and grad mode compiles
    (10–30 s on a CPU), so it pays off from a few hundred rollout steps on; the compiled step is
    differentiable once only (AOTAutograd has no double backward), so optimisers that take Hessian-vector
    products through the rollout (`sphere-newton`) need `plants.rollout`; parameters are read at every call
    (training them is fine), but changing the policy's architecture or the plant's limits recompiles. Any
    compilation failure (no C++ compiler, an operation dynamo cannot trace) falls back to the eager step
    with one warning; `fallback_reason` records why.
    """

    def __init__(self, plant: Plant, policy: Callable[[torch.Tensor], torch.Tensor], clip: bool = True,
                 **compile_kwargs: Any):
        self.plant, self.policy = plant, policy
        self.limited = clip and (plant.u_low is not None or plant.u_high is not None)
        compile_kwargs.setdefault("fullgraph", True)
        # Static shapes: the training batch and the evaluation batch each get their own specialised kernels.
        compile_kwargs.setdefault("dynamic", False)
        self._compiled: Callable | None = torch.compile(self._step, **compile_kwargs)
        self.fallback_reason: str | None = None

    def _step(self, x: torch.Tensor, lo, hi) -> tuple[torch.Tensor, torch.Tensor]:
        u = self.policy(x)
        if self.limited:
            u = torch.clamp(u, lo, hi)
        return self.plant.step(x, u), u

    def _closed_loop(self, x: torch.Tensor, lo, hi) -> tuple[torch.Tensor, torch.Tensor]:
        if self._compiled is not None:
            try:
                return self._compiled(x, lo, hi)
            except Exception as e:  # compilation is an optimisation only: never let it break a rollout
                with torch.no_grad():  # but a wrong policy output is the caller's error: say so, do not fall back
                    check_action(self.plant, x[:1], self.policy(x[:1]))
                first = (str(e).strip().splitlines() or [""])[0]
                self.fallback_reason = f"{type(e).__name__}: {first}"
                warnings.warn(f"torch.compile of the closed-loop step of {self.plant.name} failed "
                              f"({self.fallback_reason}); using the eager step", RuntimeWarning, stacklevel=3)
                self._compiled = None
        return self._step(x, lo, hi)

    def __call__(self, x0: torch.Tensor, horizon: int | None = None, terminal=None) -> Rollout:
        """Roll out from `x0` `[b, n_x]` for `horizon` steps; `terminal` as in `plants.rollout`."""
        T, P = prepare(self.plant, x0, horizon, terminal)
        lo, hi = self.plant.clip_bounds(x0) if self.limited else (None, None)
        return run_loop(self.plant, lambda x, t: self._closed_loop(x, lo, hi), x0, T, P)

    @property
    def compiled(self) -> bool:
        """False once a compilation failure has switched this rollout to the eager step."""
        return self._compiled is not None
