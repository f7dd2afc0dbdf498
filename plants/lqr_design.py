"""Linearisation at the equilibrium (torch.func.jacrev, or batched reverse mode) and the discrete LQR baseline."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .base import Plant, wrap_angles
from .errors import PlantRuntimeError, PlantSpecError
from .linear import LinearPlant
from .ode import NOT_DIFFERENTIABLE, hints_not_differentiable

__all__ = ["linearize", "lqr", "LQR", "LQRPolicy"]


def _jacobians(plant: Plant, x0: torch.Tensor, u0: torch.Tensor, method: str) -> tuple[np.ndarray, np.ndarray]:
    if method not in ("jacrev", "batched"):
        raise ValueError(f"method must be 'jacrev' or 'batched', got {method!r}")
    if method == "jacrev":
        def one(x, u):
            return plant.step(x.unsqueeze(0), u.unsqueeze(0)).squeeze(0)

        try:
            with torch.inference_mode(False):
                A, B = torch.func.jacrev(one, argnums=(0, 1))(x0.clone(), u0.clone())
            return A.detach().numpy(), B.detach().numpy()
        except Exception as e:  # e.g. a user step with an old-style autograd.Function: functorch refuses it
            if hints_not_differentiable(e):  # reverse mode below says what is wrong without this detour
                return _reverse_mode(plant, x0, u0)
            warnings.warn(f"torch.func.jacrev could not differentiate {plant.name}.step ({type(e).__name__}: {e}); "
                          "linearising by reverse mode over a batch instead (the same exact Jacobians)",
                          RuntimeWarning, stacklevel=3)
    return _reverse_mode(plant, x0, u0)


def _reverse_mode(plant: Plant, x0: torch.Tensor, u0: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    # Reverse mode over n_x copies of (x0, u0): row i of the output is seeded with e_i, so one backward pass
    # gives every row of both Jacobians (batch rows are independent). Exact like jacrev; works for any step
    # that plain autograd can differentiate.
    n = plant.n_x
    with torch.inference_mode(False), torch.enable_grad():
        x0, u0 = x0.clone(), u0.clone()
        xb = x0.expand(n, -1).clone().requires_grad_()
        ub = u0.expand(n, -1).clone().requires_grad_()
        try:
            y = plant.step(xb, ub)
        except Exception as e:
            if hints_not_differentiable(e):
                cause = e.__cause__ if isinstance(e, PlantRuntimeError) and e.__cause__ else e  # torch's own words
                raise PlantSpecError(f"{NOT_DIFFERENTIABLE.format(which='x and u')} [{plant.name}: "
                                     f"{type(cause).__name__}: {cause}]") from e
            raise
        if not y.requires_grad:
            raise PlantSpecError(f"{NOT_DIFFERENTIABLE.format(which='x and u')} [{plant.name}: its output is not "
                                 f"connected to x or u in the autograd graph]")
        A, B = torch.autograd.grad(y, (xb, ub), grad_outputs=torch.eye(n, dtype=y.dtype), allow_unused=True)
    B = torch.zeros_like(ub) if B is None else B
    A = torch.zeros_like(xb) if A is None else A
    return A.detach().numpy(), B.detach().numpy()


def _check_differentiable(plant: Plant, x0: torch.Tensor, u0: torch.Tensor, A: np.ndarray, B: np.ndarray) -> None:
    """Refuse Jacobian columns that autograd finds trivial (0, or e_j for x) while the step clearly moves.

    That is the mark of a step computed partly outside autograd (numpy, `.item()`, `.detach()`): RK4 keeps the
    identity part of `∂x⁺/∂x` and drops the rest, and the LQR would then fail as "not stabilisable".
    Central differences in float64 (relative step 1e-6) tell "moves" from rounding (≈1e-10) by a wide margin.
    """
    if isinstance(plant, LinearPlant):  # matrix products: autograd follows them by construction
        return
    n, m = plant.n_x, plant.n_u
    z = torch.cat([x0, u0]).detach()
    h = 1e-6 * z.abs().clamp_min(1.0)
    zs = torch.cat([z + torch.diag(h), z - torch.diag(h)])
    try:
        with torch.inference_mode(False), torch.no_grad():
            # One row per call: a step that reads one row (u[0, 0].item()) must not see the others' perturbations.
            y = torch.cat([plant.step(r[None, :n], r[None, n:]) for r in zs])
            y0 = plant.step(x0[None], u0[None])
    except Exception:  # a diagnostic only: a step that refuses this batch was linearised fine, let it be
        return
    fd = ((y[: n + m] - y[n + m:]) / (2 * h[:, None])).T.numpy()
    ad = np.hstack([A, B])
    eye = np.eye(n)
    tol = 1e-7 * (1.0 + float(y0.abs().max()))
    bad = []
    for j in range(n + m):
        trivial = not ad[:, j].any() or (j < n and np.array_equal(ad[:, j], eye[:, j]))
        if trivial and np.abs(fd[:, j] - ad[:, j]).max() > tol:
            bad.append(j)
    if bad:
        which = " and ".join(w for w, cols in (("x", [j for j in bad if j < n]), ("u", [j for j in bad if j >= n]))
                             if cols)
        names = [*plant.state_names, *plant.input_names]
        worst = max(bad, key=lambda j: np.abs(fd[:, j] - ad[:, j]).max())
        raise PlantSpecError(f"{NOT_DIFFERENTIABLE.format(which=which)} [{plant.name}: autograd sees no effect of "
                             f"{', '.join(names[j] for j in bad)} on the step (beyond the RK4 identity) but finite "
                             f"differences do (up to {np.abs(fd[:, worst] - ad[:, worst]).max():.3g}); or f is not "
                             f"smooth at this point (abs, sign, relu or clamp at a kink)]")


def linearize(plant: Plant, x=None, u=None, method: str = "jacrev"):
    """Discrete linearisation of `plant.step` at `(x, u)` (default the equilibrium), exact, float64.

    Returns a `control.StateSpace` in deviation coordinates `δx⁺ = A δx + B δu` with `dt = plant.dt`,
    `C = I`, `D = 0`. `method`: `"jacrev"` (`torch.func.jacrev`, default; a step it cannot transform falls
    back to the next with a warning) or `"batched"` (reverse mode over a batch of copies); same matrices.
    A step that autograd cannot follow (numpy, `.item()`, `.detach()`) is a `PlantSpecError` saying so.
    """
    import control

    with torch.inference_mode(False):
        x0 = torch.as_tensor(plant.x_eq if x is None else x, dtype=torch.float64).reshape(plant.n_x).clone()
        u0 = torch.as_tensor(plant.u_eq if u is None else u, dtype=torch.float64).reshape(plant.n_u).clone()
    A, B = _jacobians(plant, x0, u0, method)
    _check_differentiable(plant, x0, u0, A, B)
    return control.ss(A, B, np.eye(plant.n_x), np.zeros((plant.n_x, plant.n_u)), plant.dt)


class LQRPolicy(nn.Module):
    """`u = u_eq − K (x − x_eq)`, clipped to `[u_low, u_high]` when `clip` and the limits exist.

    The `periodic` coordinates of `x − x_eq` are wrapped into (−π, π] first: the saturated LQR a user would
    deploy on a pendulum measures the angle on the circle.
    """

    def __init__(self, K, x_eq, u_eq, u_low=None, u_high=None, clip: bool = True, periodic=()):
        super().__init__()
        self.periodic = tuple(int(i) for i in periodic)
        f64 = torch.float64
        self.register_buffer("K", torch.as_tensor(np.asarray(K, float), dtype=f64))
        self.register_buffer("x_eq", torch.as_tensor(np.asarray(x_eq, float), dtype=f64))
        self.register_buffer("u_eq", torch.as_tensor(np.asarray(u_eq, float), dtype=f64))
        limited = clip and (u_low is not None or u_high is not None)
        m = self.K.shape[0]
        lo = torch.full((m,), -torch.inf, dtype=f64) if u_low is None else torch.as_tensor(u_low, dtype=f64)
        hi = torch.full((m,), torch.inf, dtype=f64) if u_high is None else torch.as_tensor(u_high, dtype=f64)
        self.register_buffer("u_low", lo)
        self.register_buffer("u_high", hi)
        self.clip = bool(limited)
        self._cast: dict = {}

    def _consts(self, like: torch.Tensor):
        key = (like.dtype, like.device)
        hit = self._cast.get(key)
        if hit is None or hit[0] is not self.K:
            # Outside inference mode and without grad, so the cache is valid in every later context.
            with torch.inference_mode(False), torch.no_grad():
                c = [t.to(like).clone() for t in (self.K.T, self.x_eq, self.u_eq, self.u_low, self.u_high)]
                # u = u_eq + K x_eq − K x: one addmm per call
                hit = (self.K, c[0], c[2] + c[1] @ c[0], c[3], c[4])
            if torch.compiler.is_compiling():
                return hit[1:]
            self._cast[key] = hit
        return hit[1:]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`[b, n_x] → [b, n_u]`."""
        Kt, offset, lo, hi = self._consts(x)
        if self.periodic:
            x_eq = self.x_eq.to(x)
            x = x_eq + wrap_angles(x - x_eq, self.periodic)
        u = torch.addmm(offset, x, Kt, alpha=-1.0) if x.dim() == 2 else offset - x @ Kt
        return torch.clamp(u, lo, hi) if self.clip else u


@dataclass
class LQR:
    """The discrete LQR of a plant's linearisation: `u = u_eq − K (x − x_eq)`, optimal cost `δx0ᵀ P δx0`."""

    K: np.ndarray
    P: np.ndarray
    A: np.ndarray
    B: np.ndarray
    x_eq: np.ndarray
    u_eq: np.ndarray
    poles: np.ndarray
    policy: LQRPolicy = field(repr=False)

    def cost(self, x0: torch.Tensor) -> torch.Tensor:
        """Infinite-horizon optimal cost of the linearised problem, `(x0−x_eq)ᵀ P (x0−x_eq)` per row."""
        x_eq = torch.as_tensor(self.x_eq, dtype=x0.dtype, device=x0.device)
        dx = wrap_angles(x0 - x_eq, self.policy.periodic)
        return ((dx @ torch.as_tensor(self.P, dtype=x0.dtype, device=x0.device)) * dx).sum(-1)

    def unclipped(self) -> LQRPolicy:
        """The same feedback without actuator clipping."""
        return LQRPolicy(self.K, self.x_eq, self.u_eq, clip=False, periodic=self.policy.periodic)


def lqr(plant: Plant, clip: bool = True) -> LQR:
    """Discrete LQR (`control.dlqr`) for the plant's `Q`, `R` on its linearisation at the equilibrium.

    `clip` makes `policy` saturate at the plant's actuator limits (when it has any).
    """
    import control

    sys = linearize(plant)
    A, B = np.asarray(sys.A), np.asarray(sys.B)
    try:
        K, P, E = control.dlqr(A, B, plant.Q, plant.R)
    except Exception as e:  # e.g. unstabilisable pair or R not positive definite
        raise PlantSpecError(f"LQR of {plant.name!r} failed at its equilibrium: {type(e).__name__}: {e}; the "
                             f"linearisation must be stabilisable with Q >= 0, R > 0") from e
    K, P = np.asarray(K, float), np.asarray(P, float)
    policy = LQRPolicy(K, plant.x_eq, plant.u_eq, plant.u_low, plant.u_high, clip=clip, periodic=plant.periodic)
    return LQR(K=K, P=P, A=A, B=B, x_eq=plant.x_eq.copy(), u_eq=plant.u_eq.copy(), poles=np.asarray(E),
               policy=policy)
