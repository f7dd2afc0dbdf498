"""LipSDP-neuron's LMI for an MLP (optionally with a parallel linear branch) and its float64 verification.

For `y = W_out z_m + S x`, `z_k = σ(W_k z_{k−1} + b_k)`, `z_0 = x`, σ slope-restricted in [0, 1], and
multipliers `t_k ≥ 0` (one per neuron), the quadratic form in the increments (x, z_1, …, z_m)

    ρ‖x‖² − ‖W_out z_m + S x‖² − 2 Σ_k z_kᵀ T_k (W_k z_{k−1} − z_k)

is `ξᵀ M(ρ, t) ξ` with the block-tridiagonal (plus one corner block when S ≠ 0) matrix

    M_00 = ρI − SᵀS,   M_kk = 2T_k (− W_outᵀW_out for k = m),   M_{k,k−1} = −T_k W_k,   M_{m,0} = −W_outᵀS.

`M ⪰ 0` proves Lip ≤ √ρ (Fazlyab et al. 2019, neuron-wise T). Eliminating the blocks from the last to the first
(ECLipsE's decomposition, run backwards) gives, for fixed t, the smallest feasible ρ in closed form:
`ρ(t) = λ_max(SᵀS + Σ Cᵀ Y⁻¹ C)` (see `rho_of_multipliers`); `ρ(t)` is convex in t because it is the partial
minimum of an LMI-constrained linear objective.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import solve_triangular

from lipnet.exceptions import LipnetDimension

__all__ = ["LipschitzLMI", "rho_of_multipliers", "lmi_matrix", "verify_lmi", "certify_multipliers",
           "lmi_of_mlp"]

_EPS = np.finfo(np.float64).eps


@dataclass
class LipschitzLMI:
    """The data of the LMI: hidden-layer matrices `W_1..W_m`, output matrix `W_out`, optional skip `S`."""

    hidden: list[np.ndarray]
    out: np.ndarray
    skip: np.ndarray | None = None

    def __post_init__(self):
        self.hidden = [np.asarray(w, dtype=np.float64) for w in self.hidden]
        self.out = np.asarray(self.out, dtype=np.float64)
        n_prev = self.n_in
        for i, w in enumerate(self.hidden):
            if w.shape[1] != n_prev:
                raise LipnetDimension(f"hidden layer {i} takes {w.shape[1]} inputs, {n_prev} given")
            n_prev = w.shape[0]
        if self.out.shape[1] != n_prev:
            raise LipnetDimension(f"output matrix takes {self.out.shape[1]} inputs, {n_prev} given")
        if self.skip is not None:
            self.skip = np.asarray(self.skip, dtype=np.float64)
            if self.skip.shape != (self.out.shape[0], self.n_in):
                raise LipnetDimension(f"skip matrix must be {(self.out.shape[0], self.n_in)}, got {self.skip.shape}")

    @property
    def n_in(self) -> int:
        return (self.hidden[0] if self.hidden else self.out).shape[1]

    @property
    def widths(self) -> list[int]:
        return [w.shape[0] for w in self.hidden]

    def split(self, t: np.ndarray) -> list[np.ndarray]:
        """A flat multiplier vector cut into one vector per hidden layer."""
        cuts = np.cumsum([0, *self.widths])
        return [np.asarray(t)[cuts[i]:cuts[i + 1]] for i in range(len(self.widths))]


def lmi_of_mlp(weights: list[np.ndarray], slope: tuple[float, float] = (0.0, 1.0),
               skip: np.ndarray | None = None) -> LipschitzLMI:
    """The LMI of `W_D σ(⋯σ(W_1 x)) (+ S x)`; a slope interval [0, β] is folded into the next layer's weights."""
    alpha, beta = slope
    if alpha != 0.0:
        raise ValueError(f"LipSDP here takes slope intervals [0, β] (ReLU, tanh); got [{alpha}, {beta}]")
    ws = [np.asarray(w, dtype=np.float64) for w in weights]
    ws = [ws[0]] + [beta * w for w in ws[1:]]
    return LipschitzLMI(ws[:-1], ws[-1], skip)


def rho_of_multipliers(lmi: LipschitzLMI, t: np.ndarray, grad: bool = False, null_vector: bool = False):
    """Smallest ρ with `M(ρ, t) ⪰ 0`, or `+inf` when no ρ works; with `grad=True` also `∂ρ/∂t`.

    Backward block elimination: each hidden block's Schur complement must be positive definite (Cholesky); the
    remaining n_in × n_in block gives ρ as a largest eigenvalue. The gradient follows from the null vector ξ of
    `M(ρ(t), t)` (recovered by forward substitution): `∂ρ/∂t_{k,i} = −ξᵀ(∂M/∂t_{k,i})ξ / ‖ξ_0‖²
    = −2 ξ_{k,i} (ξ_{k,i} − (W_k ξ_{k−1})_i)` with ‖ξ_0‖ = 1 (valid where λ_max is simple).
    With `null_vector=True` (implies grad) returns `(ρ, ∂ρ/∂t, ξ)`, ξ stacked over the blocks.
    """
    grad = grad or null_vector
    t = np.asarray(t, dtype=np.float64)
    n0 = lmi.n_in
    skip = lmi.skip
    acc = skip.T @ skip if skip is not None else np.zeros((n0, n0))
    m = len(lmi.hidden)
    inf = ((float("inf"), None, None) if null_vector else (float("inf"), None)) if grad else float("inf")
    if m == 0:
        w = lmi.out if skip is None else lmi.out + skip
        evals, evecs = np.linalg.eigh(w.T @ w)
        val = float(evals[-1])
        if null_vector:
            return val, np.zeros(0), evecs[:, -1]
        return (val, np.zeros(0)) if grad else val
    ts = lmi.split(t)
    diag = np.diag(2 * ts[m - 1]) - lmi.out.T @ lmi.out
    to0 = -(lmi.out.T @ skip) if skip is not None else None
    saved = []                                   # (cholesky factor, z_prev, z_0) per block, for the null vector
    for k in range(m, 0, -1):
        off = -(ts[k - 1][:, None] * lmi.hidden[k - 1])  # M_{k,k−1}
        if k == 1:
            off = off if to0 is None else off + to0
            to0 = None
        try:
            chol = np.linalg.cholesky(diag)
        except np.linalg.LinAlgError:
            return inf
        rhs = off if to0 is None else np.concatenate([off, to0], axis=1)
        z = solve_triangular(chol, rhs, lower=True, check_finite=False)
        z_prev, z_0 = z[:, :off.shape[1]], z[:, off.shape[1]:]
        saved.append((chol, z_prev, z_0))
        if k == 1:
            acc = acc + z_prev.T @ z_prev
            break
        diag = np.diag(2 * ts[k - 2]) - z_prev.T @ z_prev
        if to0 is not None:
            to0 = -(z_prev.T @ z_0)
            acc = acc + z_0.T @ z_0
    evals, evecs = np.linalg.eigh(0.5 * (acc + acc.T))
    val = float(evals[-1])
    if not grad:
        return val
    # Null vector: ξ_0 = top eigenvector, ξ_k = −L⁻ᵀ(z_prev ξ_{k−1} + z_0 ξ_0) for k = 1..m.
    xis = [evecs[:, -1]]
    for k in range(1, m + 1):
        chol, z_prev, z_0 = saved[m - k]
        y = z_prev @ xis[-1]
        if z_0.shape[1]:
            y = y + z_0 @ xis[0]
        xis.append(-solve_triangular(chol, y, lower=True, trans="T", check_finite=False))
    g = [-2 * xis[k] * (xis[k] - lmi.hidden[k - 1] @ xis[k - 1]) for k in range(1, m + 1)]
    if null_vector:
        return val, np.concatenate(g), np.concatenate(xis)
    return val, np.concatenate(g)


def lmi_matrix(lmi: LipschitzLMI, t: np.ndarray, rho: float) -> np.ndarray:
    """The dense symmetric matrix `M(ρ, t)` in float64 (its positive semidefiniteness proves Lip ≤ √ρ)."""
    sizes = [lmi.n_in, *lmi.widths]
    cuts = np.cumsum([0, *sizes])
    n = int(cuts[-1])
    mat = np.zeros((n, n))
    blk = lambda i: slice(cuts[i], cuts[i + 1])  # noqa: E731
    ts = lmi.split(np.asarray(t, dtype=np.float64))
    m = len(lmi.hidden)
    mat[blk(0), blk(0)] = rho * np.eye(lmi.n_in)
    if m == 0:
        w = lmi.out if lmi.skip is None else lmi.out + lmi.skip
        mat[blk(0), blk(0)] -= w.T @ w
        return mat
    if lmi.skip is not None:
        mat[blk(0), blk(0)] -= lmi.skip.T @ lmi.skip
        corner = -(lmi.out.T @ lmi.skip)
        mat[blk(m), blk(0)] += corner
        mat[blk(0), blk(m)] += corner.T
    for k in range(1, m + 1):
        mat[blk(k), blk(k)] += np.diag(2 * ts[k - 1])
        off = -(ts[k - 1][:, None] * lmi.hidden[k - 1])
        mat[blk(k), blk(k - 1)] += off
        mat[blk(k - 1), blk(k)] += off.T
    mat[blk(m), blk(m)] -= lmi.out.T @ lmi.out
    return mat


def verify_lmi(lmi: LipschitzLMI, t: np.ndarray, rho: float) -> bool:
    """True when `M(ρ, t)` is proven positive definite in float64 with a rounding margin.

    The matrix is scaled to unit diagonal (a congruence: definiteness is unchanged) and Cholesky must succeed on
    `D^{-1/2} M D^{-1/2} − δI` with `δ = 4(N+2)·N·u`, which exceeds the backward error of floating-point
    Cholesky (|ΔA| ≤ γ_{N+1}|Rᵀ||R|, entries ≤ 1 after scaling) and the rounding of building and scaling M.
    """
    t = np.asarray(t, dtype=np.float64)
    if not np.isfinite(rho) or (t.size and (not np.isfinite(t).all() or (t < 0).any())):
        return False
    mat = lmi_matrix(lmi, t, rho)
    d = np.diag(mat).copy()
    if (d <= 0).any():
        return False
    s = 1.0 / np.sqrt(d)
    scaled = mat * s[:, None] * s[None, :]
    n = mat.shape[0]
    delta = 4.0 * (n + 2) * n * _EPS
    try:
        np.linalg.cholesky(scaled - delta * np.eye(n))
    except np.linalg.LinAlgError:
        return False
    return True


def certify_multipliers(lmi: LipschitzLMI, t: np.ndarray, rho: float | None = None,
                        max_inflation: float = 1e-2) -> tuple[float | None, float]:
    """The smallest verified ρ found by inflating `rho` (default: the exact ρ(t)); `(None, …)` if none.

    Returns `(rho_verified, inflation)`; inflation steps 1e-9, 1e-8, …, up to `max_inflation` (relative).
    """
    t = np.maximum(np.asarray(t, dtype=np.float64), 0.0)
    if rho is None:
        rho = rho_of_multipliers(lmi, t)
    if not np.isfinite(rho) or rho < 0:
        return None, float("nan")
    rho = max(rho, np.finfo(np.float64).tiny)
    tau = 1e-9
    while tau <= max_inflation * (1 + 1e-12):
        cand = rho * (1 + tau) + 1e-300
        if verify_lmi(lmi, t, cand):
            return cand, tau
        tau *= 10
    return None, float("nan")
