"""Linear plants `x⁺ = A x + B u` from arrays or python-control systems, with exact zero-order-hold discretisation."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import scipy.linalg
import torch

from .base import Plant, initial_states, positive_number, real_array, real_numbers
from .errors import PlantSpecError
from .fileio import atomic_savez
from .options import MAX_HORIZON, check_keys, diag_option, parse_value, positive_int

__all__ = ["LinearPlant", "from_lti", "c2d_zoh", "save_npz", "DEFAULT_DT", "LINEAR_OPTIONS", "apply_linear_options"]

DEFAULT_DT = 0.05  # sample time [s] used to discretise a continuous model when no `dt` is given (20 Hz)

LINEAR_OPTIONS = {
    "dt": f"sample time [s] for a continuous model (default {DEFAULT_DT}); must match a discrete model's dt",
    "horizon": f"default rollout length [steps] (default 200, at most {MAX_HORIZON})",
    "u_max": "actuator limit |u| <= u_max (1 or n_u values; default: unlimited)",
    "x0_std": "std of the Gaussian initial states, training (eval: 1.5x) (1 or n_x values; default 1)",
    "x0_box": "half-widths of a uniform box of initial states, training (eval: 1.5x) (1 or n_x values), "
              "instead of x0_std",
    "q": "diagonal of the state cost Q (1 or n_x values)",
    "r": "diagonal of the input cost R (1 or n_u values)",
}


def _matrix(value, name: str, rows: int | None = None, cols: int | None = None) -> np.ndarray:
    """`value` as a finite 2-D float array of the given shape, or `PlantSpecError` naming `name`."""
    arr = real_numbers(value, name)
    if arr.ndim == 1 and rows is not None and cols == 1 and arr.size == rows:
        arr = arr.reshape(rows, 1)
    if arr.ndim == 0 and rows == 1 and cols == 1:
        arr = arr.reshape(1, 1)
    if arr.ndim != 2:
        raise PlantSpecError(f"{name} must be a 2-D matrix, got shape {arr.shape}")
    if (rows is not None and arr.shape[0] != rows) or (cols is not None and arr.shape[1] != cols):
        want = f"({rows if rows is not None else 'any'}, {cols if cols is not None else 'any'})"
        raise PlantSpecError(f"{name} has shape {arr.shape}, expected {want}")
    if not np.isfinite(arr).all():
        raise PlantSpecError(f"{name} has NaN or infinite entries")
    return arr


def _state_matrices(A, B) -> tuple[np.ndarray, np.ndarray]:
    """`A` `[n, n]` and `B` `[n, m]` with n, m >= 1, or `PlantSpecError` saying what is wrong."""
    A = _matrix(A, "A")
    n = A.shape[0]
    if A.shape != (n, n):
        raise PlantSpecError(f"A must be square, got shape {A.shape}")
    if n == 0:
        raise PlantSpecError("A is 0x0: a plant needs at least one state; give A as [n_x, n_x] with n_x >= 1")
    B = _matrix(B, "B")
    if B.shape[0] != n:
        raise PlantSpecError(f"B has {B.shape[0]} rows but A is {n}x{n}; B must be [{n}, n_u]")
    if B.shape[1] == 0:
        raise PlantSpecError(f"B has no columns: a plant needs at least one input; give B as [{n}, n_u] with n_u >= 1")
    return A, B


def c2d_zoh(A, B, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact zero-order-hold discretisation: `expm([[A, B], [0, 0]] dt) = [[Ad, Bd], [0, I]]`."""
    A, B = np.asarray(A, float), np.asarray(B, float)
    n, m = B.shape
    M = np.zeros((n + m, n + m))
    M[:n, :n], M[:n, n:] = A, B
    E = scipy.linalg.expm(M * float(dt))
    return E[:n, :n], E[:n, n:]


class LinearPlant(Plant):
    """Discrete linear plant `x⁺ = A x + B u` in absolute coordinates; equilibrium `x_eq = 0`, `u_eq = 0`.

    Parameters
    ----------
    A, B : `[n, n]`, `[n, m]` discrete-time matrices (finite).
    dt : sample time (> 0).
    C, D : optional output matrices (stored, not used by state feedback); default `C = I`, `D = 0`.
    Q, R : stage cost (default identities).
    x0_std : std of the Gaussian training initial states (scalar or `[n]`, default 1); eval uses 1.5×.
    x0_box : instead of `x0_std`, half-widths of a uniform box of training initial states; eval uses 1.5×.
    u_max : symmetric actuator limit (scalar or `[m]`), or None for unlimited.
    horizon, name, spec, state_names, state_units, input_names : as in `Plant`.

    A plant built from arrays has `spec == ""` (nothing to reload it from); `save_npz(plant, path)` writes it
    to an `.npz` and sets a spec that `plants.load` turns back into the same plant.
    """

    def __init__(self, A, B, dt: float, C=None, D=None, Q=None, R=None, x0_std=None, x0_box=None, u_max=None,
                 horizon: int = 200, name: str = "linear", spec: str = "", **names: Any):
        check_keys(names, ["state_names", "state_units", "input_names"], "LinearPlant")
        A, B = _state_matrices(A, B)
        n, m = B.shape
        try:
            dt = positive_number(dt, "dt")
        except PlantSpecError:
            raise PlantSpecError(f"dt must be > 0 for a discrete plant (one finite number), got {dt!r}") from None
        self.A, self.B = A, B
        self.C = np.eye(n) if C is None else _matrix(C, "C", cols=n)
        self.D = np.zeros((self.C.shape[0], m)) if D is None else _matrix(D, "D", rows=self.C.shape[0], cols=m)
        Q = None if Q is None else _matrix(Q, "Q", n, n)
        R = None if R is None else _matrix(R, "R", m, m)
        init = initial_states(x0_std, x0_box, n)
        lo = hi = None
        if u_max is not None:
            hi = real_array(u_max, "u_max", (np.size(u_max),), infinite=True)
            if hi.size not in (1, m) or not (hi > 0).all():
                raise PlantSpecError(f"u_max must be 1 or {m} values > 0, got {hi.tolist()}")
            hi = np.broadcast_to(hi, (m,)).copy()
            lo = -hi
        Plant.__init__(self, n_x=n, n_u=m, dt=dt, Q=Q, R=R, u_low=lo, u_high=hi,
                       horizon=positive_int(horizon, "horizon", MAX_HORIZON), name=name, spec=spec, **init, **names)

    def step(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """`x A^T + u B^T` on `[..., n]`, `[..., m]` (one fused `addmm` for 2-D batches)."""
        if x.shape[-1] != self.n_x or u.shape[-1] != self.n_u:
            raise ValueError(f"{self.name}.step expects x [..., {self.n_x}] and u [..., {self.n_u}], "
                             f"got {tuple(x.shape)} and {tuple(u.shape)}")
        At, Bt = self._transposed(x)
        if x.dim() == 2 and u.dim() == 2:
            return torch.addmm(u @ Bt, x, At)
        return x @ At + u @ Bt

    def _transposed(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.const("A", like).T, self.const("B", like).T


def apply_linear_options(A, B, dt_model: float, options: dict[str, Any], defaults: dict[str, Any] | None = None,
                         what: str = "a linear plant") -> dict[str, Any]:
    """Resolve the linear options (`LINEAR_OPTIONS`) into `LinearPlant` keyword arguments.

    `dt_model` is the model's own sample time (0: continuous, discretised by ZOH at option `dt` or
    `DEFAULT_DT`). `defaults` provides Q, R, x0_std or x0_box, u_max, horizon from the model (e.g. from an `.npz`).
    """
    check_keys(options, LINEAR_OPTIONS, what)
    vals = {k: parse_value(v, k) if isinstance(v, str) else v for k, v in options.items()}
    kw = dict(defaults or {})
    A, B = _state_matrices(A, B)
    n = A.shape[0]
    if dt_model and dt_model > 0:
        if "dt" in vals and not np.isclose(float(vals["dt"]), dt_model, rtol=1e-12, atol=0):
            raise PlantSpecError(f"{what} is discrete with dt={dt_model}; option dt={vals['dt']} cannot resample "
                                 f"it (drop the option, or give a continuous model)")
        dt = float(dt_model)
    else:
        dt = float(vals.get("dt", DEFAULT_DT))
        if not dt > 0:
            raise PlantSpecError(f"option dt must be > 0, got {dt}")
        A, B = c2d_zoh(A, B, dt)
    if "q" in vals:
        kw["Q"] = diag_option(vals["q"], n, "q")
    if "r" in vals:
        kw["R"] = diag_option(vals["r"], B.shape[1], "r")
    for key in ("u_max", "x0_std", "x0_box", "horizon"):
        if key in vals:
            kw[key] = vals[key]
    for key, other in (("x0_std", "x0_box"), ("x0_box", "x0_std")):
        if key in vals and other not in vals:  # an option replaces the model's initial-state distribution
            kw.pop(other, None)
    if "horizon" in kw:
        kw["horizon"] = positive_int(kw["horizon"], "horizon", MAX_HORIZON)
    return dict(A=A, B=B, dt=dt, **kw)


def from_lti(sys, dt: float | None = None, **kwargs: Any) -> LinearPlant:
    """A `LinearPlant` from a `control.StateSpace` or `control.TransferFunction` (continuous or discrete).

    A continuous system is discretised exactly by zero-order hold at `dt` (default `DEFAULT_DT`); a discrete
    one keeps its own sample time (`dt`, if given, must equal it). `kwargs` go to `LinearPlant`
    (`Q`, `R`, `x0_std` or `x0_box`, `u_max`, `horizon`, `name`, `spec`, names).
    """
    import control

    if isinstance(sys, control.TransferFunction):
        sys = control.ss(sys)
    if not isinstance(sys, control.StateSpace):
        raise PlantSpecError(f"expected a control.StateSpace or control.TransferFunction, got {type(sys).__name__}")
    if sys.dt is True:
        raise PlantSpecError("the system is discrete with an unspecified sample time (dt=True); give it a number")
    sys_dt = float(sys.dt or 0.0)
    opts = {} if dt is None else {"dt": dt}
    kw = apply_linear_options(sys.A, sys.B, sys_dt, opts, what="the LTI system")
    kw.update(kwargs)
    kw.setdefault("C", np.asarray(sys.C, float))
    kw.setdefault("D", np.asarray(sys.D, float))
    return LinearPlant(**kw)


def save_npz(plant: LinearPlant, path: str) -> str:
    """Write a linear plant to `path` (`.npz`: A, B, C, D, dt, Q, R, x0_std or x0_box, u_max, names); set its spec.

    Returns the spec: the absolute `path` (plus `?horizon=N` when the horizon is not the default 200), so
    `plants.load(spec)` rebuilds the same plant from any working directory.
    """
    from .options import make_spec

    if not isinstance(plant, LinearPlant):
        raise TypeError(f"save_npz needs a LinearPlant, got {type(plant).__name__}")
    if not str(path).endswith(".npz"):
        raise PlantSpecError(f"the file name must end in .npz, got {path!r}")
    lo, hi = plant.u_low, plant.u_high
    if (lo is None) != (hi is None) or (hi is not None and not np.array_equal(lo, -hi)):
        raise PlantSpecError("only symmetric actuator limits (u_low = -u_high) can be written as u_max")
    init = "x0_box" if plant.init_train.kind == "uniform" else "x0_std"
    arrays = dict(A=plant.A, B=plant.B, C=plant.C, D=plant.D, dt=np.float64(plant.dt), Q=plant.Q, R=plant.R,
                  state_names=np.array(plant.state_names), state_units=np.array(plant.state_units),
                  input_names=np.array(plant.input_names), **{init: np.asarray(plant.init_train.scale, float)})
    if hi is not None:
        arrays["u_max"] = hi
    path = os.path.realpath(os.path.expanduser(str(path)))  # the spec must name this file from any directory
    atomic_savez(path, arrays)
    plant.spec = make_spec(path, {} if plant.horizon == 200 else {"horizon": plant.horizon})
    return plant.spec
