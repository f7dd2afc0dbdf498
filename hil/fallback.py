"""What the host applies when the device's action misses its deadline: hold, zero or a safe LQR gain."""

from __future__ import annotations

import numpy as np

from lipnet.exceptions import LipnetValue

__all__ = ["FALLBACKS", "Fallback", "make_fallback"]

FALLBACKS = ("hold", "zero", "lqr")


class Fallback:
    """`u = fallback(x, u_last)`: a float64 action within the plant's limits.

    `hold` repeats the last applied action (the equilibrium input before the first one), `zero` applies zero,
    `lqr` applies `u_eq − K (x − x_eq)` with the plant's LQR gain; all are clipped to the actuator limits.
    """

    def __init__(self, kind: str, n_u: int, u_eq=None, u_low=None, u_high=None, K=None, x_eq=None):
        if kind not in FALLBACKS:
            raise LipnetValue(f"unknown fallback {kind!r}; valid: {', '.join(FALLBACKS)}")
        if kind == "lqr" and K is None:
            raise LipnetValue("fallback 'lqr' needs the plant's LQR gain K")
        self.kind, self.n_u = kind, int(n_u)
        self.u_eq = np.zeros(self.n_u) if u_eq is None else np.asarray(u_eq, float).reshape(self.n_u)
        self.lo = np.full(self.n_u, -np.inf) if u_low is None else np.asarray(u_low, float).reshape(self.n_u)
        self.hi = np.full(self.n_u, np.inf) if u_high is None else np.asarray(u_high, float).reshape(self.n_u)
        self.K = None if K is None else np.asarray(K, float).reshape(self.n_u, -1)
        self.x_eq = None if x_eq is None else np.asarray(x_eq, float).reshape(-1)
        self.initial = np.clip(self.u_eq, self.lo, self.hi)

    def __call__(self, x: np.ndarray, u_last: np.ndarray | None) -> np.ndarray:
        if self.kind == "hold":
            u = self.initial if u_last is None else u_last
        elif self.kind == "zero":
            u = np.zeros(self.n_u)
        else:
            u = self.u_eq - self.K @ (x - self.x_eq)
        return np.clip(u, self.lo, self.hi)


def make_fallback(kind: str, plant) -> Fallback:
    """The fallback `kind` for `plant` (`lqr` computes the gain with `plants.lqr`)."""
    K = None
    if kind == "lqr":
        from plants import lqr

        K = np.asarray(lqr(plant).K, float)
    return Fallback(kind, plant.n_u, plant.u_eq, plant.u_low, plant.u_high, K, plant.x_eq)
