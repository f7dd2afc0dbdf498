"""Ours: LipSDP-neuron's optimum without a generic SDP solver — a structure-exploiting interior-point method.

A generic conic solver (SCS, Clarabel) spends its time on the lifted cone formulation. LipSDP-neuron has only
n + 1 unknowns (one multiplier per neuron and ρ), and each multiplier moves the LMI matrix by a rank-two term, so
a barrier method with exact Newton steps costs one dense N × N Cholesky/inverse per step (N = n_in + Σ widths).

Two phases. (1) `smoothed_descent`: from ECLipsE-Fast's closed-form point, L-BFGS on a smooth upper surrogate of
the exact ρ(t) (a soft maximum of the eigenvalues of the Schur recursion's final block, sharpened in stages) moves
the multipliers most of the way at the cost of one Schur recursion per evaluation. (2) `barrier_solve`: path
following from there. Started at ECLipsE-Fast's point directly, the barrier method needs thousands of Newton steps
(the iterate crawls along a narrow valley with a constant Newton decrement, far from the central path); from the
phase-1 point it centres in tens. At the end the smallest ρ for the best multipliers is computed exactly by the
Schur-complement recursion (`rho_of_multipliers`) and verified in float64 (`verify_lmi`); every phase only
proposes multipliers, so soundness never depends on convergence.
"""

from __future__ import annotations

import time

import numpy as np
from scipy.linalg import solve_triangular

from ._threads import single_thread
from .lmi import LipschitzLMI, certify_multipliers, lmi_matrix, rho_of_multipliers

__all__ = ["eclipse_fast_multipliers", "feasible_start", "smoothed_descent", "barrier_solve", "lipsdp_schur"]


def eclipse_fast_multipliers(lmi: LipschitzLMI) -> tuple[float, np.ndarray]:
    """ECLipsE-Fast (Xu & Sivaranjani 2024): closed-form layer-wise multipliers; returns `(ρ, t)`.

    Forward recursion with X_0 = I: `t_k = 1/λ_max(W_k X_{k−1}⁻¹ W_kᵀ)`, `X_k = 2t_k I − t_k² W_k X_{k−1}⁻¹ W_kᵀ`,
    `ρ = λ_max(W_out X_m⁻¹ W_outᵀ)`; scaled by ρ into the multipliers of `M(ρ, t)`. Needs no skip branch.
    """
    if lmi.skip is not None:
        raise ValueError("ECLipsE-Fast has no skip branch; use feasible_start")
    x = np.eye(lmi.n_in)
    ts = []
    for w in lmi.hidden:
        q = w @ np.linalg.solve(x, w.T)
        q = 0.5 * (q + q.T)
        lam = float(np.linalg.eigvalsh(q)[-1])
        tk = 1.0 / max(lam, 1e-300)
        x = 2 * tk * np.eye(w.shape[0]) - tk * tk * q
        ts.append(np.full(w.shape[0], tk))
    q = lmi.out @ np.linalg.solve(x, lmi.out.T)
    rho = float(np.linalg.eigvalsh(0.5 * (q + q.T))[-1])
    t = np.concatenate(ts) if ts else np.zeros(0)
    return rho, t * rho


def feasible_start(lmi: LipschitzLMI) -> np.ndarray:
    """Layer-wise scalar multipliers making every Schur complement positive definite (works with a skip).

    Backward greedy: `t_m = λ_max(W_outᵀW_out)` so that Y_m ⪰ t_m I, then `t_{k} = λ_max(C_kᵀ Y⁻¹ C_k)` so that
    each next complement is ⪰ t_k I; zero rows get a tiny positive multiplier.
    """
    if lmi.skip is None and lmi.hidden:
        return eclipse_fast_multipliers(lmi)[1]
    m = len(lmi.hidden)
    if m == 0:
        return np.zeros(0)
    ts = [None] * m
    top = float(np.linalg.eigvalsh(lmi.out.T @ lmi.out)[-1])
    ts[m - 1] = np.full(lmi.widths[m - 1], max(top, 1e-12))
    y = np.diag(2 * ts[m - 1]) - lmi.out.T @ lmi.out
    for k in range(m - 1, 0, -1):
        off = ts[k][:, None] * lmi.hidden[k]
        q = off.T @ np.linalg.solve(y, off)
        lam = max(float(np.linalg.eigvalsh(0.5 * (q + q.T))[-1]), 1e-12)
        ts[k - 1] = np.full(lmi.widths[k - 1], lam)
        y = 2 * lam * np.eye(lmi.widths[k - 1]) - q
    return np.concatenate(ts)


def _soft_rho(lmi: LipschitzLMI, t: np.ndarray, beta: float) -> tuple[float, np.ndarray | None]:
    """`(1/β) log Σ exp(β λ_i(A(t)))` ≥ ρ(t) = λ_max(A(t)) and its gradient in t (no skip branch).

    A(t) = Σ Cᵀ Y⁻¹ C is the final block of the backward Schur recursion. The gradient of each eigenvalue follows
    from the null-vector formula of `rho_of_multipliers` with ξ_0 = its eigenvector; the soft maximum weights them,
    which is one forward substitution with all n_in eigenvectors at once (columns scaled by √weight).
    Convex in t (a monotone convex spectral function of a matrix-convex map); +inf outside the domain.
    """
    m = len(lmi.hidden)
    ts = lmi.split(t)
    diag = np.diag(2 * ts[m - 1]) - lmi.out.T @ lmi.out
    saved = []
    for k in range(m, 0, -1):
        try:
            chol = np.linalg.cholesky(diag)
        except np.linalg.LinAlgError:
            return float("inf"), None
        z = solve_triangular(chol, -(ts[k - 1][:, None] * lmi.hidden[k - 1]), lower=True, check_finite=False)
        saved.append((chol, z))
        if k > 1:
            diag = np.diag(2 * ts[k - 2]) - z.T @ z
    acc = z.T @ z
    lam, vec = np.linalg.eigh(0.5 * (acc + acc.T))
    w = np.exp(beta * (lam - lam[-1]))
    value = float(lam[-1] + np.log(w.sum()) / beta)
    w /= w.sum()
    xis = [vec * np.sqrt(w)[None, :]]
    for k in range(1, m + 1):
        chol, z = saved[m - k]
        xis.append(-solve_triangular(chol, z @ xis[-1], lower=True, trans="T", check_finite=False))
    g = [-2 * (xis[k] * (xis[k] - lmi.hidden[k - 1] @ xis[k - 1])).sum(axis=1) for k in range(1, m + 1)]
    return value, np.concatenate(g)


def smoothed_descent(lmi: LipschitzLMI, t0: np.ndarray, rtols=(1e-2, 1e-3, 1e-4, 1e-5, 1e-6),
                     max_iter: int = 3000) -> tuple[np.ndarray, int]:
    """Phase 1: L-BFGS on the soft maximum of `_soft_rho` in log t, with the smoothing gap ln(n_in)/β = rtol·ρ.

    Returns `(t, evaluations)`; `t` is the best point by exact ρ(t) (the start when nothing improved). Needs no
    skip branch (with one, the start is returned unchanged).
    """
    from scipy.optimize import minimize

    t0 = np.asarray(t0, dtype=np.float64)
    best_t, best = t0, rho_of_multipliers(lmi, t0)
    if lmi.skip is not None or not lmi.hidden or not np.isfinite(best) or best <= 0 or (t0 <= 0).any():
        return t0, 0
    count = [0]
    u = np.log(t0)
    for rtol in rtols:
        beta = np.log(max(lmi.n_in, 2)) / (rtol * best)
        scale = best

        def fun(v, beta=beta, scale=scale):
            count[0] += 1
            tt = np.exp(v)
            val, g = _soft_rho(lmi, tt, beta)
            if not np.isfinite(val):  # outside the domain: a wall the line search backs off from
                return 1e30, np.zeros_like(v)
            return val / scale, g * tt / scale

        res = minimize(fun, u, jac=True, method="L-BFGS-B",
                       options={"maxiter": max_iter, "maxcor": 50, "ftol": 1e-15, "gtol": 1e-12})
        cand = rho_of_multipliers(lmi, np.exp(res.x))
        if np.isfinite(cand) and cand < best:
            best, best_t, u = cand, np.exp(res.x), res.x
    return best_t, count[0]


def _structure(lmi: LipschitzLMI) -> tuple[np.ndarray, np.ndarray]:
    """Global row index P of each neuron in M and the matrix whose columns are a_p = e_P − (W_k[i, :] in block k−1).

    `∂M/∂t_p = e_P a_pᵀ + a_p e_Pᵀ`: each multiplier moves M by a rank-two term.
    """
    cuts = np.cumsum([0, lmi.n_in, *lmi.widths])
    big = int(cuts[-1])
    idx = np.arange(lmi.n_in, big)
    amat = np.zeros((big, idx.size))
    col = 0
    for k, w in enumerate(lmi.hidden, start=1):
        n = w.shape[0]
        amat[cuts[k] + np.arange(n), col + np.arange(n)] = 1.0
        amat[cuts[k - 1]:cuts[k], col:col + n] = -w.T
        col += n
    return idx, amat


def barrier_solve(lmi: LipschitzLMI, t0: np.ndarray, rtol: float = 1e-5, max_newton: int = 400,
                  time_limit: float | None = None) -> tuple[np.ndarray, int]:
    """Interior-point path following for `min ρ s.t. M(ρ, t) ⪰ 0` with exact Newton steps on the LMI's structure.

    Centres `s·ρ − log det M(ρ, t)` for s growing ×8 per stage until the duality gap N/s ≤ rtol·ρ.
    Gradient and Hessian of `−log det M` use `S = M⁻¹` and the rank-two structure of ∂M/∂t_p:
    `g_p = −2(S a_p)_P`, `H_pq = 2[S_PQ (a_pᵀ S a_q) + (S a_p)_Q (S a_q)_P]`, plus the ρ row (block 0 of S).
    Every iterate keeps M ≻ 0 (Cholesky), so it is always a certificate. Returns `(t, newton_steps)`.
    """
    from scipy.linalg import LinAlgError, cho_factor, cho_solve

    idx, amat = _structure(lmi)
    n0 = lmi.n_in
    t = np.asarray(t0, dtype=np.float64).copy()
    rho_t = rho_of_multipliers(lmi, t)
    if not np.isfinite(rho_t) or t.size == 0:
        return t, 0
    rho = 1.5 * rho_t + 1e-12 * max(1.0, rho_t)
    big = amat.shape[0]

    def logdet(r, tt):
        try:
            c, low = cho_factor(lmi_matrix(lmi, tt, r), lower=True, check_finite=False)
        except (LinAlgError, ValueError):
            return None
        return 2.0 * float(np.log(np.diag(c)).sum()), (c, low)

    cur = logdet(rho, t)
    if cur is None:
        return t, 0
    s = big / max(rho - 0.0, 1e-300)
    # A tiny linear cost on t keeps the barrier bounded below when a neuron is disconnected (−log 2t alone
    # would push its multiplier to infinity); it does not change the exact ρ(t) computed at the end.
    c_t = 1e-9 * rho / max(float(np.mean(t)), 1e-300)
    steps = 0
    start = time.perf_counter()
    while steps < max_newton:
        for _ in range(50):  # centring at this s
            ld, fac = cur
            sinv = cho_solve(fac, np.eye(big), check_finite=False)
            sa = sinv @ amat
            se_idx = sinv[np.ix_(idx, idx)]
            sa_idx = sa[idx]
            grad = np.empty(t.size + 1)
            grad[0] = s - np.trace(sinv[:n0, :n0])
            grad[1:] = s * c_t - 2.0 * np.diag(sa_idx)
            hess = np.empty((t.size + 1, t.size + 1))
            hess[0, 0] = float((sinv[:n0, :n0] ** 2).sum())
            hess[0, 1:] = hess[1:, 0] = 2.0 * (sinv[:n0][:, idx] * sa[:n0]).sum(axis=0)
            hess[1:, 1:] = 2.0 * (se_idx * (amat.T @ sa) + sa_idx.T * sa_idx)
            hess = 0.5 * (hess + hess.T)
            try:
                d = -cho_solve(cho_factor(hess, check_finite=False), grad, check_finite=False)
            except (LinAlgError, ValueError):
                d = -np.linalg.lstsq(hess, grad, rcond=None)[0]
            dec = -(grad @ d)
            steps += 1
            if dec <= 1e-7:
                break
            phi = s * (rho + c_t * t.sum()) - ld
            step = 1.0
            accepted = False
            for _ in range(60):
                r_new, t_new = rho + step * d[0], t + step * d[1:]
                trial = logdet(r_new, t_new)
                if trial is not None and s * (r_new + c_t * t_new.sum()) - trial[0] <= phi - 0.25 * step * dec:
                    accepted = True
                    break
                step *= 0.5
            if not accepted:
                break
            rho, t, cur = r_new, t_new, trial
            if dec < 1e-3 or steps >= max_newton:
                break
        if big / s <= rtol * rho:
            break
        if time_limit is not None and time.perf_counter() - start > time_limit:
            break
        s *= 8.0
    return t, steps


def lipsdp_schur(lmi: LipschitzLMI, t0: np.ndarray | None = None, rtol: float = 1e-5,
                 time_limit: float | None = None) -> dict:
    """Our fast bound: barrier method from ECLipsE-Fast's point, exact ρ(t), then `M(ρ, t) ⪰ 0` verified.

    Returns `{"value": verified √ρ or None, "rho": ρ(t), "t", "iters" (Newton steps), "evals" (phase-1
    evaluations), "inflation", "start_value"}`.
    """
    with single_thread():
        start = feasible_start(lmi) if t0 is None else np.asarray(t0, dtype=np.float64)
        rho0 = rho_of_multipliers(lmi, start)
        warm, evals = smoothed_descent(lmi, start)
        t, iters = barrier_solve(lmi, warm, rtol=rtol, time_limit=time_limit)
        # Keep the best multipliers by exact ρ(t): never worse than phase 1, which is never worse than the start.
        cands = [(rho_of_multipliers(lmi, c), i, c) for i, c in enumerate((t, warm, start))]
        rho, _, t = min((r if np.isfinite(r) else np.inf, i, c) for r, i, c in cands)
        rho_v, tau = certify_multipliers(lmi, t, rho)
    return {"value": None if rho_v is None else float(np.sqrt(rho_v)) * (1 + 1e-12), "rho": rho, "t": t,
            "iters": iters, "evals": evals, "inflation": tau,
            "start_value": float(np.sqrt(rho0)) if np.isfinite(rho0) else None}
