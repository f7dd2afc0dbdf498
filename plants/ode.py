"""Continuous-time plants `ẋ = f(x, u)`: zero-order hold on `u`, fused RK4 with configurable substeps."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch

from .base import InitialStates, Plant
from .errors import PlantSpecError
from .options import check_keys, diag_option, make_spec, parse_value

__all__ = ["ODEPlant", "FunctionPlant", "rk4_step"]

COMMON_OPTIONS = {
    "dt": "sample time [s]",
    "substeps": "RK4 substeps per sample",
    "horizon": "default rollout length [steps]",
    "q": "diagonal of the state cost Q (1 or n_x values)",
    "r": "diagonal of the input cost R (1 or n_u values)",
}


def rk4_step(f: Callable, x: torch.Tensor, u: torch.Tensor, dt: float, substeps: int = 1) -> torch.Tensor:
    """`substeps` classical RK4 steps of `ẋ = f(x, u)` over `dt` with `u` held (zero-order hold).

    The stage arithmetic uses `torch.add(a, b, alpha=c)` so each stage costs one fused kernel instead of a
    scalar multiply and an add (and one fewer autograd node).
    """
    h = dt / substeps
    for _ in range(substeps):
        k1 = f(x, u)
        k2 = f(torch.add(x, k1, alpha=0.5 * h), u)
        k3 = f(torch.add(x, k2, alpha=0.5 * h), u)
        k4 = f(torch.add(x, k3, alpha=h), u)
        x = torch.add(x, torch.add(torch.add(k1, k4), torch.add(k2, k3), alpha=2.0), alpha=h / 6.0)
    return x


def _check_xu(plant: Plant, x: torch.Tensor, u: torch.Tensor) -> None:
    if x.shape[-1] != plant.n_x or u.shape[-1] != plant.n_u:
        raise ValueError(f"{plant.name}.step expects x [..., {plant.n_x}] and u [..., {plant.n_u}], "
                         f"got {tuple(x.shape)} and {tuple(u.shape)}")


class ODEPlant(Plant):
    """Base of the nonlinear built-ins: subclasses set `NAME`, `PARAMS`, defaults, and write `f` and `describe`.

    `PARAMS` maps each physical parameter to `(default, unit, meaning)`; every one of them, and the common
    options `dt`, `substeps`, `horizon`, `q`, `r`, can be overridden by keyword or by the spec
    (`cartpole?m=0.2&dt=0.01`). `step` integrates `f` with RK4 over `dt` in `substeps` substeps.
    """

    NAME: ClassVar[str] = "ode"
    PARAMS: ClassVar[dict[str, tuple[float, str, str]]] = {}
    DT: ClassVar[float] = 0.02
    SUBSTEPS: ClassVar[int] = 1
    HORIZON: ClassVar[int] = 200

    def __init__(self, **options: Any):
        check_keys(options, [*self.PARAMS, *COMMON_OPTIONS], f"plant {self.NAME!r}")
        vals = {k: parse_value(v, k) if isinstance(v, str) else v for k, v in options.items()}
        params = {}
        for key, (default, _, _) in self.PARAMS.items():
            v = vals.get(key, default)
            if np.ndim(v) != 0 or not math.isfinite(float(v)):
                raise PlantSpecError(f"parameter {key} of {self.NAME!r} must be one finite number, got {v!r}")
            params[key] = float(v)
        dt = float(vals.get("dt", self.DT))
        substeps, horizon = vals.get("substeps", self.SUBSTEPS), vals.get("horizon", self.HORIZON)
        if not dt > 0:
            raise PlantSpecError(f"dt must be > 0 for {self.NAME!r}, got {dt}")
        for key, v in (("substeps", substeps), ("horizon", horizon)):
            if np.ndim(v) != 0 or float(v) != int(float(v)) or int(float(v)) < 1:
                raise PlantSpecError(f"{key} must be a positive integer, got {v!r}")
        self.params = params
        self.substeps = int(float(substeps))
        desc = self.describe(params)
        if "q" in vals:
            desc["Q"] = diag_option(vals["q"], desc["n_x"], "q")
        if "r" in vals:
            desc["R"] = diag_option(vals["r"], desc["n_u"], "r")
        Plant.__init__(self, dt=dt, horizon=int(float(horizon)), spec=make_spec(self.NAME, vals),
                       name=self.NAME, **desc)

    # Subclasses implement `describe` and `rhs` (and `drive` when part of the input term can be hoisted).
    def describe(self, p: dict[str, float]) -> dict[str, Any]:
        """Dimensions, equilibrium, limits, cost, initial-state boxes and names for parameters `p`."""
        raise TypeError(f"{type(self).__name__} must define describe(p)")

    def drive(self, u: torch.Tensor) -> torch.Tensor:
        """The input term, computed once per sample and shared by every RK4 stage (default: `u` itself)."""
        return u

    def rhs(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """`ẋ` from the state and the prepared input `v = drive(u)`."""
        raise TypeError(f"{type(self).__name__} must define rhs(x, v)")

    def f(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Continuous-time dynamics `ẋ = f(x, u)` on `[..., n_x]`, `[..., n_u]` tensors."""
        return self.rhs(x, self.drive(u))

    def step(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """One sample period by RK4 (`substeps` substeps), `u` held constant; batched and differentiable."""
        _check_xu(self, x, u)
        compiled = getattr(self, "_compiled", None)
        if compiled is not None:
            try:
                return compiled(x, u)
            except Exception as e:  # compilation is an optimisation only: never let it break a simulation
                warnings.warn(f"torch.compile of {self.name}.step failed ({type(e).__name__}: {e}); "
                              f"using the eager step", RuntimeWarning, stacklevel=2)
                self._compiled = None
        return self._eager_step(x, u)

    def _eager_step(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return rk4_step(self.rhs, x, self.drive(u), self.dt, self.substeps)

    def compile(self, **compile_kwargs: Any) -> ODEPlant:
        """Route `step` through `torch.compile` (fuses each RK4 step into a few kernels, forward and backward).

        Optional: the first call per shape/dtype compiles (tens of seconds on a loaded CPU), and any
        compilation error falls back to the eager step with a warning. `compile_kwargs` go to `torch.compile`.
        The compiled step is differentiable once only (AOTAutograd has no double backward): keep the eager
        step for optimisers that take Hessian-vector products through the rollout (`sphere-newton`).
        Returns the plant itself.
        """
        compile_kwargs.setdefault("fullgraph", True)
        self._compiled = torch.compile(self._eager_step, **compile_kwargs)
        return self

    @classmethod
    def option_help(cls) -> dict[str, str]:
        """Every option of this plant as `{key: "meaning [unit], default value"}` (for docs and CLI help)."""
        out = {k: f"{meaning}{f' [{unit}]' if unit else ''}, default {d:g}"
               for k, (d, unit, meaning) in cls.PARAMS.items()}
        defaults = {"dt": cls.DT, "substeps": cls.SUBSTEPS, "horizon": cls.HORIZON}
        out.update({k: f"{m}, default {defaults[k]:g}" if k in defaults else m for k, m in COMMON_OPTIONS.items()})
        return out


class FunctionPlant(ODEPlant):
    """A user model: continuous-time torch `f(x, u) -> ẋ` on batched `[b, n_x]`, `[b, n_u]` tensors, plus data.

    Parameters
    ----------
    f : callable, differentiable in torch, returns `[b, n_x]`.
    n_x, n_u, dt : dimensions and sample time (> 0).
    substeps : RK4 substeps per sample.
    x_eq, u_eq, u_low, u_high, Q, R, horizon, state_names, state_units, input_names, name, spec :
        as in `Plant` (defaults: origin, unlimited, identities, 200).
    x0_std : half-widths of the uniform training box around `x_eq` (eval box is 1.5×), default 1.
    """

    NAME = "function"

    def __init__(self, f: Callable, n_x: int, n_u: int, dt: float, substeps: int = 1, x0_std=1.0,
                 name: str = "function", spec: str = "", **plant_kwargs: Any):
        if not callable(f):
            raise PlantSpecError(f"f must be a callable f(x, u) -> dx/dt, got {type(f).__name__}")
        n_x, n_u = int(n_x), int(n_u)
        if n_x < 1 or n_u < 1 or not float(dt) > 0 or int(substeps) < 1:
            raise PlantSpecError(f"need n_x >= 1, n_u >= 1, dt > 0, substeps >= 1; got n_x={n_x}, n_u={n_u}, "
                                 f"dt={dt}, substeps={substeps}")
        check_keys(plant_kwargs, ["x_eq", "u_eq", "u_low", "u_high", "Q", "R", "horizon", "state_names",
                                  "state_units", "input_names"], "a user plant")
        self.user_f, self.params, self.substeps = f, {}, int(substeps)
        scale = np.broadcast_to(np.asarray(x0_std, float), (n_x,)).copy()
        Plant.__init__(self, n_x=n_x, n_u=n_u, dt=float(dt), name=name, spec=spec,
                       init_train=InitialStates(scale), init_eval=InitialStates(1.5 * scale), **plant_kwargs)
        self._validate()

    def _validate(self) -> None:
        x = torch.as_tensor(np.stack([self.x_eq, self.x_eq]), dtype=torch.float64)
        u = torch.as_tensor(np.stack([self.u_eq, self.u_eq]), dtype=torch.float64)
        try:
            dx = self.user_f(x, u)
        except Exception as e:  # the user's code: report what it did with shapes we can explain
            raise PlantSpecError(f"calling f(x, u) with x [2, {self.n_x}], u [2, {self.n_u}] float64 failed: "
                                 f"{type(e).__name__}: {e}") from e
        if not isinstance(dx, torch.Tensor) or tuple(dx.shape) != (2, self.n_x):
            got = tuple(dx.shape) if isinstance(dx, torch.Tensor) else type(dx).__name__
            raise PlantSpecError(f"f(x, u) must return a tensor [batch, n_x] = [2, {self.n_x}], got {got}")
        if not torch.isfinite(dx).all():
            raise PlantSpecError("f(x_eq, u_eq) has NaN or infinite entries")

    def rhs(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The user's dynamics."""
        return self.user_f(x, v)
