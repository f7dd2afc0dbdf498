"""Neuron-wise incremental quadratic-constraint certificate for a linear plant in feedback with the network.

For `x⁺ = A x + B π(x)` and two trajectories, the increments ξ = (Δx, Δz_1, …, Δz_m) satisfy, per neuron, the
slope restriction `Δz_i (Δv_i − Δz_i) ≥ 0` (σ slope-restricted in [0, 1] after folding β into the next layer, as
LipSDP does; an output saturation is one more such layer) and, for `Δ(x) = π(x) − K x` with Lip(Δ) ≤ L,
`L²‖Δx‖² − ‖Δu − KΔx‖² ≥ 0`. If P ≻ 0, t ≥ 0, λ ≥ 0 and ε > 0 make

    Ψ = blkdiag(P − εI − λL²I, 0) + T(t) + λ FᵀF − EᵀPE ⪰ 0      (E ξ = Δx⁺,  F ξ = Δu − KΔx)

then `V(Δx⁺) ≤ V(Δx) − ε‖Δx‖²` with V = ΔxᵀPΔx (S-procedure; T(t) is LipSDP's multiplier block): the loop is a
contraction in the P-norm, so all trajectories converge to each other and to its unique equilibrium (Yin, Seiler &
Arcak 2021, incremental form). With t = 0 the LMI is the bounded-real lemma for A + BK with Lip(Δ) ≤ L, i.e. the
small-gain test, so it certifies at least what small gain certifies; the neuron-wise t make it tighter.
The SDP (cvxpy) only proposes (P, t, λ, ε); the certificate is the float64 check `verify_iqc`.
"""

from __future__ import annotations

import time
import warnings

import numpy as np

from .lmi import LipschitzLMI

__all__ = ["iqc_matrix", "verify_iqc", "iqc_certificate"]


def _blocks(lmi: LipschitzLMI, A: np.ndarray, B: np.ndarray, K: np.ndarray):
    """E (ξ ↦ Δx⁺) and F (ξ ↦ Δu − KΔx) as dense matrices over ξ = (Δx, Δz_1, …, Δz_m)."""
    n_x = A.shape[0]
    big = n_x + sum(lmi.widths)
    e = np.zeros((n_x, big))
    f = np.zeros((B.shape[1], big))
    e[:, :n_x] = A
    f[:, :n_x] = -K
    last = slice(big - lmi.widths[-1], big) if lmi.hidden else slice(0, n_x)
    e[:, last] += B @ lmi.out
    f[:, last] += lmi.out
    return e, f


def iqc_matrix(lmi: LipschitzLMI, A, B, K, L: float, P, t, lam: float, eps: float) -> np.ndarray:
    """The dense symmetric matrix Ψ in float64 (positive semidefinite ⇒ incremental contraction)."""
    A, B, K, P = (np.atleast_2d(np.asarray(v, dtype=np.float64)) for v in (A, B, K, P))
    e, f = _blocks(lmi, A, B, K)
    n_x = A.shape[0]
    big = e.shape[1]
    psi = np.zeros((big, big))
    psi[:n_x, :n_x] = P - (eps + lam * L * L) * np.eye(n_x)
    cuts = np.cumsum([0, n_x, *lmi.widths])
    for k, (w, tk) in enumerate(zip(lmi.hidden, lmi.split(np.asarray(t, dtype=np.float64)), strict=True), start=1):
        rows, cols = slice(cuts[k], cuts[k + 1]), slice(cuts[k - 1], cuts[k])
        psi[rows, rows] += np.diag(2 * tk)
        psi[rows, cols] -= tk[:, None] * w
        psi[cols, rows] -= (tk[:, None] * w).T
    psi += lam * (f.T @ f) - e.T @ P @ e
    return 0.5 * (psi + psi.T)


def verify_iqc(lmi: LipschitzLMI, A, B, K, L: float, P, t, lam: float, eps: float, margin: float = 1e-9) -> bool:
    """True when P ≻ 0, t ≥ 0, λ ≥ 0, ε > 0 and Ψ ⪰ 0 are proven in float64.

    Ψ is scaled to unit diagonal (a congruence) and Cholesky must succeed on the scaled Ψ − δI with
    δ = max(margin, 8(N+2)·N·u): this exceeds Cholesky's backward error and the rounding of the products that
    build Ψ (entries of the scaled products are O(1) for the well-scaled matrices the SDP returns).
    """
    t = np.asarray(t, dtype=np.float64)
    P = np.atleast_2d(np.asarray(P, dtype=np.float64))
    if not (eps > 0 and lam >= 0 and np.isfinite([eps, lam, L]).all() and np.isfinite(P).all()):
        return False
    if t.size and (not np.isfinite(t).all() or (t < 0).any()):
        return False
    try:
        np.linalg.cholesky(0.5 * (P + P.T) - 1e-12 * np.abs(P).max() * np.eye(P.shape[0]))
    except np.linalg.LinAlgError:
        return False
    psi = iqc_matrix(lmi, A, B, K, L, P, t, lam, eps)
    d = np.diag(psi).copy()
    if (d <= 0).any():
        return False
    s = 1.0 / np.sqrt(d)
    n = psi.shape[0]
    delta = max(margin, 8.0 * (n + 2) * n * np.finfo(np.float64).eps)
    try:
        np.linalg.cholesky(psi * s[:, None] * s[None, :] - delta * np.eye(n))
    except np.linalg.LinAlgError:
        return False
    return True


def iqc_certificate(lmi: LipschitzLMI, A, B, K, L: float, solver: str = "SCS", p_max: float = 1e4) -> dict:
    """Solve `max ε s.t. Ψ ⪰ 0, I ⪯ P ⪯ p_max·I, t ≥ 0, λ ≥ 0` with cvxpy, then verify in float64.

    `lmi` describes the network from Δx to Δu (hidden layers incl. a saturation layer, output matrix); K and L
    describe the loop transformation (L = +inf or None drops the Lipschitz constraint). Returns
    `{"passes", "eps", "contraction", "P", "t", "lam", "seconds", "status", "reason"}`; `passes` only when the
    verification succeeds; `contraction` = √(1 − ε/λ_max(P)) bounds ‖Δx_{k+1}‖_P / ‖Δx_k‖_P.
    """
    import cvxpy as cp

    t0 = time.perf_counter()
    A, B, K = (np.atleast_2d(np.asarray(v, dtype=np.float64)) for v in (A, B, K))
    use_l = L is not None and np.isfinite(L)
    L = float(L) if use_l else 0.0
    n_x = A.shape[0]
    e, f = _blocks(lmi, A, B, K)
    big = e.shape[1]
    P = cp.Variable((n_x, n_x), symmetric=True)
    eps = cp.Variable()
    lam = cp.Variable(nonneg=True)
    ts = [cp.Variable(n, nonneg=True) for n in lmi.widths]
    cuts = np.cumsum([0, n_x, *lmi.widths])
    psi = -(e.T @ P @ e)
    if use_l:
        psi = psi + lam * (f.T @ f)
    corner = np.zeros((big, n_x))
    corner[:n_x] = np.eye(n_x)
    psi = psi + corner @ (P - eps * np.eye(n_x) - (lam * L * L if use_l else 0) * np.eye(n_x)) @ corner.T
    for k, (w, tk) in enumerate(zip(lmi.hidden, ts, strict=True), start=1):
        sel_k = np.zeros((big, w.shape[0]))
        sel_k[cuts[k]:cuts[k + 1]] = np.eye(w.shape[0])
        sel_p = np.zeros((big, w.shape[1]))
        sel_p[cuts[k - 1]:cuts[k]] = np.eye(w.shape[1])
        tw = cp.multiply(cp.reshape(tk, (w.shape[0], 1), order="F") @ np.ones((1, w.shape[1])), w)
        psi = psi + sel_k @ (2 * cp.diag(tk)) @ sel_k.T - sel_k @ tw @ sel_p.T - sel_p @ tw.T @ sel_k.T
    cons = [0.5 * (psi + psi.T) >> 0, P >> np.eye(n_x), P << p_max * np.eye(n_x), eps <= 1.0]
    prob = cp.Problem(cp.Maximize(eps), cons)
    out = {"passes": False, "eps": None, "contraction": None, "P": None, "t": None, "lam": None,
           "status": "", "reason": "", "solver": solver}
    try:
        with warnings.catch_warnings():  # "inaccurate" is recorded in status; the float64 check decides anyway
            warnings.simplefilter("ignore", UserWarning)
            prob.solve(solver=getattr(cp, solver.upper()), **({"eps": 1e-7, "max_iters": 20_000}
                                                              if solver.upper() == "SCS" else {}))
    except cp.error.SolverError as exc:
        out.update(status="solver error", reason=f"SDP solver failed: {exc}", seconds=time.perf_counter() - t0)
        return out
    out["status"] = str(prob.status)
    if eps.value is None or P.value is None:
        out.update(reason=f"SDP status {prob.status}", seconds=time.perf_counter() - t0)
        return out
    p_val = 0.5 * (P.value + P.value.T)
    t_val = np.concatenate([np.asarray(v.value, dtype=np.float64).reshape(-1) for v in ts]) if ts else np.zeros(0)
    # First-order solvers return slightly negative zeros; a tiny floor keeps every diagonal entry of Ψ positive.
    t_val = np.maximum(t_val, 1e-9 * max(float(np.max(t_val, initial=0.0)), 1.0))
    lam_val = max(float(lam.value), 0.0) if use_l else 0.0
    raw_eps = float(eps.value)
    out.update(P=p_val.tolist(), t=t_val.tolist(), lam=lam_val, raw_eps=raw_eps)
    if not raw_eps > 0:
        out.update(reason=f"no contraction found (best ε = {raw_eps:.3g} ≤ 0)", seconds=time.perf_counter() - t0)
        return out
    # The solver's ε is optimistic by its tolerance: halve it until Ψ verifies, giving up below 1e-6·ε.
    cand = raw_eps
    while cand > raw_eps * 1e-6:
        if verify_iqc(lmi, A, B, K, L if use_l else 0.0, p_val, t_val, lam_val, cand):
            pmax = float(np.linalg.eigvalsh(p_val)[-1])
            out.update(passes=True, eps=cand, contraction=float(np.sqrt(max(0.0, 1.0 - cand / pmax))),
                       reason=f"Ψ ⪰ 0 verified in float64 with ε = {cand:.3g}")
            break
        cand *= 0.5
    else:
        out["reason"] = "the SDP's point did not verify in float64"
    out["seconds"] = time.perf_counter() - t0
    return out
