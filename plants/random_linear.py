"""Linear benchmark plants: a held-out family of random plants and the PVTOL-like hover model.

Both are plant specs as they are (`module:function` with numeric options):

    lipnet train --plant "plants.random_linear:random_linear?seed=3"            # n_x, n_u, stability from the seed
    lipnet train --plant "plants.random_linear:random_linear?seed=3&n_x=8&n_u=2&unstable=1"
    lipnet train --plant "plants.random_linear:pvtol"

(`BUILTINS` offers both as built-in names, `random_linear?seed=3` and `pvtol`, for `plants.library.BUILTIN_LINEAR`.)

`random_linear`: a discrete plant `x⁺ = A x + B u` (dt = 0.05 s, horizon 100), deterministic from `seed`: 2–8
states, 1–3 inputs (never more than states), stable (spectral radius 0.5–0.98) or unstable (1.02–1.2, at least one
mode outside the unit circle), controllable (the controllability Gramian over the horizon is well conditioned
enough for a stabilising feedback of moderate gain). States are badly scaled: in physical coordinates
`z` the plant has Q_z = diag(q) and initial std 1 per state; lipnet sees `x = S z` with `S = diag(10^U(−2, 2))`
(four decades between states), so Q = S⁻¹ diag(q) S⁻¹, x0_std = S and, likewise, the inputs' weights R = diag(r),
q and r log-uniform in [0.1, 10]. No actuator limit: the LQR is the exact optimum.

`pvtol`: python-control's `examples/pvtol-lqr.py` model linearised at hover (x, y, θ, ẋ, ẏ, θ̇; inputs F1, F2),
m = 4 kg, J = 0.0475 kg m², r = 0.25 m, g = 9.8 m/s², c = 0.05 N s/m, discretised by ZOH at 0.05 s, its final
LQR weights (Q = diag(100, 10, 2π/5, 1e-3, 1e-3, 1e-3) with a little velocity weight so Q > 0, R = diag(10, 1)),
initial states in the box ±(0.5, 0.5, 0.3, 0.5, 0.5, 0.5); `u_max` > 0 adds an actuator limit (default none).
"""

from __future__ import annotations

import math

import numpy as np

from .errors import PlantSpecError
from .linear import LinearPlant, c2d_zoh
from .options import check_keys, make_spec, parse_value

__all__ = ["random_linear", "pvtol", "BUILTINS"]

DT, HORIZON = 0.05, 100


def _spectral_radius(A: np.ndarray) -> float:
    return float(np.max(np.abs(np.linalg.eigvals(A))))


def _controllable(A: np.ndarray, B: np.ndarray, steps: int = 20) -> bool:
    """The finite-horizon controllability Gramian Σ Aᵏ B Bᵀ Aᵏᵀ is not nearly singular (condition < 1e8)."""
    W, Ak = np.zeros_like(A), np.eye(A.shape[0])
    for _ in range(steps):
        AkB = Ak @ B
        W += AkB @ AkB.T
        Ak = A @ Ak
    s = np.linalg.svd(W, compute_uv=False)
    return bool(s[-1] > 0 and s[0] / s[-1] < 1e8)


def random_linear(seed: float = 0, n_x: float = 0, n_u: float = 0, unstable: float = -1) -> LinearPlant:
    """A random badly scaled discrete linear plant, the same for the same arguments (see the module docstring).

    `n_x` (0: 2–8 from the seed), `n_u` (0: 1–min(3, n_x) from the seed), `unstable` (1, 0, or −1: from the seed).
    """
    if any(isinstance(v, list) or float(v) != int(v) for v in (seed, n_x, n_u, unstable)):
        raise PlantSpecError(f"random_linear takes whole numbers, got seed={seed}, n_x={n_x}, n_u={n_u}, "
                             f"unstable={unstable}")
    seed, n_x, n_u, unstable = int(seed), int(n_x), int(n_u), int(unstable)
    if seed < 0 or not 0 <= n_x <= 64 or not 0 <= n_u <= 16 or unstable not in (-1, 0, 1):
        raise PlantSpecError(f"random_linear needs seed >= 0, 0 <= n_x <= 64, 0 <= n_u <= 16, unstable in -1, 0, "
                             f"1; got seed={seed}, n_x={n_x}, n_u={n_u}, unstable={unstable}")
    rng = np.random.default_rng([seed, 18])
    n = n_x or int(rng.integers(2, 9))
    m = n_u or int(rng.integers(1, min(3, n) + 1))
    grow = bool(rng.integers(0, 2)) if unstable == -1 else bool(unstable)
    radius = rng.uniform(1.02, 1.2) if grow else rng.uniform(0.5, 0.98)
    while True:
        A0 = rng.standard_normal((n, n)) / math.sqrt(n)
        B0 = rng.standard_normal((n, m)) / math.sqrt(n)
        A0 *= radius / _spectral_radius(A0)
        if _controllable(A0, B0):
            break
    scale = 10.0 ** rng.uniform(-2, 2, n)
    q, r = 10.0 ** rng.uniform(-1, 1, n), 10.0 ** rng.uniform(-1, 1, m)
    S, S_inv = np.diag(scale), np.diag(1 / scale)
    return LinearPlant(S @ A0 @ S_inv, S @ B0, DT, Q=S_inv @ np.diag(q) @ S_inv, R=np.diag(r), x0_std=scale,
                       horizon=HORIZON, name=f"random_linear_{seed}_{n}x{m}{'u' if grow else 's'}")


def pvtol(u_max: float = 0) -> LinearPlant:
    """python-control's PVTOL example linearised at hover, 6 states, 2 inputs (see the module docstring)."""
    m, J, r, g, c = 4.0, 0.0475, 0.25, 9.8, 0.05
    A = np.zeros((6, 6))
    A[0, 3] = A[1, 4] = A[2, 5] = 1.0
    A[3, 2], A[3, 3], A[4, 4] = -g, -c / m, -c / m
    B = np.zeros((6, 2))
    B[3, 0], B[4, 1], B[5, 0] = 1 / m, 1 / m, r / J
    Ad, Bd = c2d_zoh(A, B, DT)
    return LinearPlant(Ad, Bd, DT, Q=np.diag([100.0, 10.0, 2 * math.pi / 5, 1e-3, 1e-3, 1e-3]), R=np.diag([10.0, 1.0]),
                       x0_box=[0.5, 0.5, 0.3, 0.5, 0.5, 0.5], u_max=u_max if u_max > 0 else None, name="pvtol",
                       state_names=["x", "y", "theta", "x_dot", "y_dot", "theta_dot"])


def _builtin(name: str, make, keys: tuple[str, ...]):
    """`make` as a built-in plant name: text options parsed, the spec written back as `name?options`."""

    def load(**options: str) -> LinearPlant:
        check_keys(options, keys, f"plant {name!r}")
        plant = make(**{k: parse_value(v, k) for k, v in options.items()})
        plant.spec = make_spec(name, options)
        return plant

    load.__doc__ = make.__doc__
    return load


# For plants.library.BUILTIN_LINEAR: `random_linear?seed=3&n_x=5` and `pvtol?u_max=5` as built-in names.
BUILTINS = {"random_linear": _builtin("random_linear", random_linear, ("seed", "n_x", "n_u", "unstable")),
            "pvtol": _builtin("pvtol", pvtol, ("u_max",))}
