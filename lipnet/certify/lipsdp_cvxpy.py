"""LipSDP-neuron (Fazlyab et al. 2019) with cvxpy, written block-wise; the result is re-verified in float64."""

from __future__ import annotations

import time

import numpy as np

from lipnet.exceptions import CertificationError

from .lipsdp_schur import eclipse_fast_multipliers
from .lmi import LipschitzLMI, certify_multipliers

__all__ = ["solve_lipsdp_neuron", "SOLVERS"]

SOLVERS = ("SCS", "CLARABEL")


def _problem(lmi: LipschitzLMI):
    """cvxpy problem `min ρ s.t. M(ρ, t) ⪰ 0, t ≥ 0` assembled from blocks (no dense [A;B]ᵀQ[A;B])."""
    import cvxpy as cp

    m = len(lmi.hidden)
    n0 = lmi.n_in
    rho = cp.Variable(nonneg=True, name="rho")
    ts = [cp.Variable(n, nonneg=True, name=f"t{k + 1}") for k, n in enumerate(lmi.widths)]
    sizes = [n0, *lmi.widths]
    blocks = [[None] * (m + 1) for _ in range(m + 1)]
    a00 = rho * np.eye(n0)
    if m == 0:
        w = lmi.out if lmi.skip is None else lmi.out + lmi.skip
        return cp.Problem(cp.Minimize(rho), [a00 - w.T @ w >> 0]), rho, ts
    if lmi.skip is not None:
        a00 = a00 - lmi.skip.T @ lmi.skip
    blocks[0][0] = a00
    for k in range(1, m + 1):
        w = lmi.hidden[k - 1]
        # T_k W_k without a dense diag(t) product: broadcast t along the rows.
        off = -cp.multiply(cp.reshape(ts[k - 1], (w.shape[0], 1), order="F") @ np.ones((1, w.shape[1])), w)
        blocks[k][k - 1] = off
        blocks[k - 1][k] = off.T
        diag = 2 * cp.diag(ts[k - 1])
        blocks[k][k] = diag - lmi.out.T @ lmi.out if k == m else diag
    if lmi.skip is not None:
        corner = -(lmi.out.T @ lmi.skip)
        blocks[m][0] = corner if blocks[m][0] is None else blocks[m][0] + corner
        blocks[0][m] = corner.T if blocks[0][m] is None else blocks[0][m] + corner.T
    for i in range(m + 1):
        for j in range(m + 1):
            if blocks[i][j] is None:
                blocks[i][j] = np.zeros((sizes[i], sizes[j]))
    mat = cp.bmat(blocks)
    # The matrix is symmetric by construction; symmetrising tells cvxpy so.
    return cp.Problem(cp.Minimize(rho), [0.5 * (mat + mat.T) >> 0]), rho, ts


def _repair(lmi: LipschitzLMI, t: np.ndarray, raw: float):
    """Move an inexact solver point towards ECLipsE-Fast's strictly feasible point until the LMI verifies.

    M is affine in (ρ, t), so `(1−α)·M(solver) + α·M(strict)` is positive definite once α outweighs the solver's
    small negative eigenvalues; the ρ it costs is α·(ρ_strict − ρ_solver). The exact ρ(t_α) is then verified.
    """
    if lmi.skip is not None or not lmi.hidden:
        return None, float("nan"), "not repairable"
    rho_e, t_e = eclipse_fast_multipliers(lmi)
    rho_e *= 1.01
    for alpha in (1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2):
        t_a = (1 - alpha) * t + alpha * t_e
        rho_v, tau = certify_multipliers(lmi, t_a, None, max_inflation=1e-3)
        if rho_v is not None:
            return rho_v, tau, f"solver multipliers mixed {alpha:.0e} with ECLipsE-Fast's strictly feasible point"
    return None, float("nan"), "verification failed"


def solve_lipsdp_neuron(lmi: LipschitzLMI, solver: str = "SCS", eps: float = 1e-7,
                        max_iters: int = 200_000) -> dict:
    """Solve LipSDP-neuron and verify it: returns value (verified √ρ or None), raw solver √ρ, t, timings.

    The solver's ρ is inflated until `verify_lmi` proves `M(ρ, t) ⪰ 0` with its returned multipliers; when the
    solver's own ρ cannot be verified, the exact ρ(t) for its multipliers is tried before giving up.
    """
    import cvxpy as cp

    solver = solver.upper()
    if solver not in SOLVERS:
        raise CertificationError(f"unknown SDP solver {solver!r}; valid: {', '.join(SOLVERS)}")
    t0 = time.perf_counter()
    prob, rho, ts = _problem(lmi)
    kwargs = {"eps": eps, "max_iters": max_iters} if solver == "SCS" else {}
    try:
        prob.solve(solver=getattr(cp, solver), **kwargs)
    except cp.error.SolverError as exc:
        return {"value": None, "raw": None, "t": None, "status": f"solver error: {exc}",
                "seconds": time.perf_counter() - t0, "inflation": None}
    solve_s = time.perf_counter() - t0
    if rho.value is None:
        return {"value": None, "raw": None, "t": None, "status": str(prob.status), "seconds": solve_s,
                "inflation": None}
    t = np.concatenate([np.asarray(v.value, dtype=np.float64).reshape(-1) for v in ts]) if ts else np.zeros(0)
    # First-order solvers return ~0 (even slightly negative) multipliers for neurons that do not matter; a tiny
    # positive floor keeps every diagonal entry of M positive so the float64 check can succeed.
    t = np.maximum(t, 1e-9 * max(float(np.max(t, initial=0.0)), 1e-300))
    raw = float(rho.value)
    rho_v, tau = certify_multipliers(lmi, t, max(raw, 0.0), max_inflation=1e-3)
    how = "solver rho inflated"
    if rho_v is None:
        rho_v, tau = certify_multipliers(lmi, t, None, max_inflation=1e-3)
        how = "exact rho(t) of the solver's multipliers"
    if rho_v is None:
        rho_v, tau, how = _repair(lmi, t, raw)
    return {"value": None if rho_v is None else float(np.sqrt(rho_v)) * (1 + 1e-12),
            "raw": float(np.sqrt(max(raw, 0.0))), "t": t, "status": str(prob.status),
            "seconds": time.perf_counter() - t0, "solve_seconds": solve_s, "inflation": tau, "verified_by": how}
