"""Continuous-time plants `ẋ = f(x, u)`: zero-order hold on `u`, fused RK4 with configurable substeps."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch

from .base import Plant, initial_states, positive_number
from .errors import PlantRuntimeError, PlantSpecError
from .options import MAX_HORIZON, MAX_SUBSTEPS, check_keys, diag_option, make_spec, parse_value, positive_int

__all__ = ["ODEPlant", "FunctionPlant", "rk4_step"]

COMMON_OPTIONS = {
    "dt": "sample time [s]",
    "substeps": f"RK4 substeps per sample (at most {MAX_SUBSTEPS})",
    "horizon": f"default rollout length [steps] (at most {MAX_HORIZON})",
    "q": "diagonal of the state cost Q (1 or n_x values)",
    "r": "diagonal of the input cost R (1 or n_u values)",
}

NOT_DIFFERENTIABLE = ("plant step is not differentiable in {which} (it uses numpy, .item() or .detach()?); write f "
                      "with torch operations so lipnet can linearise and train through it")
# What torch says when a function leaves autograd (numpy on a graph tensor, functorch and .item()/numpy, ...).
_NOT_DIFFERENTIABLE_HINTS = ("numpy()", "doesn't have storage", ".item()", "does not require grad",
                             "does not have a grad_fn")


# Options of the built-in ODE plants beyond their physical parameters: the initial-state region and task presets.
REGION_OPTIONS = {
    "x0_box": "half-widths of the uniform initial-state box around the equilibrium (1 or n_x values); "
              "training and evaluation use the same box",
    "x0_std": "std of Gaussian initial states around the equilibrium (1 or n_x values), instead of x0_box",
    "task": "a preset of options for a documented task (see the plant's TASKS); options given beside it win",
}


def hints_not_differentiable(exc: BaseException) -> bool:
    """Whether `exc` is torch refusing to differentiate through numpy, `.item()` or a detached tensor."""
    text = str(exc)
    return any(h in text for h in _NOT_DIFFERENTIABLE_HINTS)


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
    # Task presets: name → function of the physical parameters giving option values (e.g. u_max, x0_box).
    TASKS: ClassVar[dict[str, Callable[[dict[str, float]], dict[str, Any]]]] = {}
    PERIODIC: ClassVar[tuple[int, ...]] = ()  # indices of 2π-periodic angles
    DT: ClassVar[float] = 0.02
    SUBSTEPS: ClassVar[int] = 1
    HORIZON: ClassVar[int] = 200

    def __init__(self, **options: Any):
        check_keys(options, [*self.PARAMS, *COMMON_OPTIONS, *REGION_OPTIONS], f"plant {self.NAME!r}")
        given = {k: parse_value(v, k) if isinstance(v, str) and k != "task" else v for k, v in options.items()}
        vals = dict(given)
        task = vals.pop("task", None)
        if task is not None:
            if task not in self.TASKS:
                raise PlantSpecError(f"unknown task {task!r} for plant {self.NAME!r}; valid tasks: "
                                     f"{', '.join(self.TASKS) or 'none'}")
            vals = {**self.TASKS[task](self._params(vals)), **vals}  # explicit options win over the preset
        params = self._params(vals)
        dt = positive_number(vals.get("dt", self.DT), "dt")
        substeps = positive_int(vals.get("substeps", self.SUBSTEPS), "substeps", MAX_SUBSTEPS)
        horizon = positive_int(vals.get("horizon", self.HORIZON), "horizon", MAX_HORIZON)
        self.params, self.task = params, task
        self.substeps = substeps
        desc = self.describe(params)
        if "q" in vals:
            desc["Q"] = diag_option(vals["q"], desc["n_x"], "q")
        if "r" in vals:
            desc["R"] = diag_option(vals["r"], desc["n_u"], "r")
        if "x0_box" in vals or "x0_std" in vals:
            desc.update(initial_states(vals.get("x0_std"), vals.get("x0_box"), desc["n_x"], eval_factor=1.0))
        Plant.__init__(self, dt=dt, horizon=horizon, spec=make_spec(self.NAME, given), name=self.NAME,
                       periodic=self.PERIODIC, **desc)

    def _params(self, vals: dict[str, Any]) -> dict[str, float]:
        params = {}
        for key, (default, _, _) in self.PARAMS.items():
            v = vals.get(key, default)
            if np.ndim(v) != 0 or not math.isfinite(float(v)):
                raise PlantSpecError(f"parameter {key} of {self.NAME!r} must be one finite number, got {v!r}")
            params[key] = float(v)
        return params

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
    f : callable, differentiable in torch, returns `[b, n_x]`; it must not modify `x` or `u` in place.
    n_x, n_u, dt : dimensions (positive integers) and sample time (> 0).
    substeps : RK4 substeps per sample (at most `MAX_SUBSTEPS`).
    x_eq, u_eq, u_low, u_high, Q, R, horizon, state_names, state_units, input_names, name, spec :
        as in `Plant` (defaults: origin, unlimited, identities, 200).
    x0_std : std of the Gaussian training initial states around `x_eq` (eval: 1.5×).
    x0_box : instead of `x0_std`, half-widths of a uniform training box around `x_eq` (eval: 1.5×); with neither,
        the box of half-width 1 (what function plants always had).

    `f` is called once at construction on a probe batch at `(x_eq, u_eq)`, in float64 and float32: an error, a
    non-tensor or wrongly shaped output, NaN, or an in-place change of `x` or `u` is a `PlantSpecError`; an output
    of another float dtype is cast back to the input's dtype at every call (with one warning here). An exception
    raised by `f` later is re-raised as `PlantRuntimeError` naming the plant (rollouts and the Gymnasium
    environment add the step).
    """

    NAME = "function"

    def __init__(self, f: Callable, n_x: int, n_u: int, dt: float, substeps: int = 1, x0_std=None, x0_box=None,
                 name: str = "function", spec: str = "", **plant_kwargs: Any):
        if not callable(f):
            raise PlantSpecError(f"f must be a callable f(x, u) -> dx/dt, got {type(f).__name__}")
        n_x, n_u = positive_int(n_x, "n_x"), positive_int(n_u, "n_u")
        check_keys(plant_kwargs, ["x_eq", "u_eq", "u_low", "u_high", "Q", "R", "horizon", "state_names",
                                  "state_units", "input_names", "periodic"], "a user plant")
        self.user_f, self.params = f, {}
        self.substeps = positive_int(substeps, "substeps", MAX_SUBSTEPS)
        Plant.__init__(self, n_x=n_x, n_u=n_u, dt=dt, name=name, spec=spec,
                       **initial_states(x0_std, 1.0 if x0_std is None and x0_box is None else x0_box, n_x),
                       **plant_kwargs)
        self._validate()

    @property
    def source(self) -> str:
        """Where `f` comes from, for messages: the spec without options, else `f`'s qualified name."""
        return self.spec.partition("?")[0] or getattr(self.user_f, "__qualname__", "") or self.name

    def _validate(self) -> None:
        """Call `f` once per dtype at the equilibrium and refuse what would fail (or mislead) later."""
        cast = []
        for dtype in (torch.float64, torch.float32):
            dx = self._probe(dtype)
            if dx.dtype != dtype:
                cast.append(f"{str(dx.dtype).removeprefix('torch.')} for {str(dtype).removeprefix('torch.')} x")
        if cast:
            warnings.warn(f"user plant {self.source!r}: f(x, u) returns {' and '.join(cast)}; lipnet casts its "
                          f"output back to the dtype of x at every call. To avoid the cast, keep f in x's dtype "
                          f"(make constants with torch.as_tensor(c, dtype=x.dtype))", UserWarning, stacklevel=3)

    def _probe(self, dtype: torch.dtype) -> torch.Tensor:
        """`f` on a batch of 2 copies of `(x_eq, u_eq)` in `dtype`, with every output check."""
        what = f"user plant {self.source!r}"
        x = torch.as_tensor(np.stack([self.x_eq, self.x_eq]), dtype=dtype)
        u = torch.as_tensor(np.stack([self.u_eq, self.u_eq]), dtype=dtype)
        before = {"x": (x.clone(), x._version), "u": (u.clone(), u._version)}
        try:
            dx = self.user_f(x, u)
        except Exception as e:  # the user's code: report what it did with shapes we can explain
            fix = ("; lipnet trains in float32 by default, so make f work in the dtype of x (constants as "
                   "torch.as_tensor(c, dtype=x.dtype))" if dtype == torch.float32 else "")
            raise PlantSpecError(f"{what}: calling f(x, u) with x [2, {self.n_x}], u [2, {self.n_u}] "
                                 f"{str(dtype).removeprefix('torch.')} failed: {type(e).__name__}: {e}{fix}") from e
        for key, arg in (("x", x), ("u", u)):
            # The version counter catches every in-place op, even one that leaves the values unchanged.
            if arg._version != before[key][1] or not torch.equal(arg, before[key][0]):
                raise PlantSpecError(f"{what}: f modifies its input {key} in place; return a new tensor ({key} + 1, "
                                     f"not {key} += 1 or {key}[:, 0] += 1; or start f with {key} = {key}.clone()), "
                                     f"since an in-place change corrupts the rollout and its gradients")
        if not isinstance(dx, torch.Tensor):
            raise PlantSpecError(f"{what}: f(x, u) returned {type(dx).__name__}; it must return a torch tensor "
                                 f"[batch, n_x] (write f with torch operations so lipnet can differentiate it)")
        if not dx.is_floating_point():
            raise PlantSpecError(f"{what}: f(x, u) returned {str(dx.dtype).removeprefix('torch.')} for "
                                 f"{str(dtype).removeprefix('torch.')} x; it must return floating-point dx/dt")
        if tuple(dx.shape) != (2, self.n_x):
            raise PlantSpecError(f"{what}: f(x, u) must return a tensor [batch, n_x] = [2, {self.n_x}], got "
                                 f"{tuple(dx.shape)}")
        if not torch.isfinite(dx).all():
            raise PlantSpecError(f"{what}: f(x_eq, u_eq) has NaN or infinite entries ({dx[0].tolist()}); the "
                                 f"equilibrium x_eq, u_eq must be a point where f is finite")
        return dx

    def rhs(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The user's dynamics, cast to `x`'s dtype; an exception becomes a `PlantRuntimeError`."""
        if torch.compiler.is_compiling():  # traced: an exception fails the compilation, which falls back to eager
            dx = self.user_f(x, v)
        else:
            try:
                dx = self.user_f(x, v)
            except Exception as exc:
                err = PlantRuntimeError(f"user plant {self.source!r} raised {type(exc).__name__}: {exc}")
                if hints_not_differentiable(exc):
                    err.advice = f"; {NOT_DIFFERENTIABLE.format(which='x/u')}"
                    err.args = (f"{err}{err.advice}",)
                raise err from exc
        return dx if dx.dtype == x.dtype else dx.to(x.dtype)
