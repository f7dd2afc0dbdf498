"""Training toward a larger certified region of attraction (`lipnet train --roa`).

After the main training, a last stage minimises a Lyapunov-decrease penalty, as in Yang, Dai et al.,
"Lyapunov-stable neural control for state and output feedback" (ICML 2024), while its keep-best guards the
closed-loop cost (the loop's `ROA_COST_SLACK`): for a fixed quadratic `V(x) = (x − x_eq)ᵀ P (x − x_eq)` whose unit
level set is the target region (`target_shape`), the penalty is the mean of
`relu(V(F(x)) / V(x) − (1 − κ))` over states drawn uniformly in `{V ≤ 1}` and pushed toward violations by a few
projected-gradient (PGD) ascent steps, the falsifier the paper trains against. The controller keeps its
Lipschitz bound by construction (the layers are unchanged); `lipnet certify` then proves what was gained.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["LyapunovObjective", "target_shape", "TARGET_RATES", "BLENDS", "COST_BUDGET", "TARGET_GROWTH"]


# Contraction rates of the candidate target shapes, as fractions of the way from ρ(A_cl) to 1: fastest first.
TARGET_RATES = (0.5, 0.9, 0.97)
# Blends `K = (1 − α) K_π + α K_roa` of the controller's local gain with the region-maximising linear gain, gentlest
# last: the target may come from a gentler local law than the controller's own, within `COST_BUDGET`.
BLENDS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0)
# Linear-quadratic cost (relative) a blend may add to the controller's local law: half the stage's own guard
# (`ROA_COST_SLACK` = 10 % on the closed-loop cost), the rest is the network's room to be nonlinear.
COST_BUDGET = 0.05
# The stage's target holds this many times the reference (the saturated LQR's certified region) volume.
TARGET_GROWTH = 2.0


def target_shape(plant, controller, box=None, reference: dict | None = None,
                 growth: float = TARGET_GROWTH) -> tuple[np.ndarray, float]:
    """`(P, rate)`: the V the stage trains for, `{V ≤ 1}` its target region.

    The shapes are the largest ellipsoids in the box that a local linear law contracts
    (`lipnet.certify.roa.shaped_lyapunov`, rates `TARGET_RATES`): a V that decreases near x_eq, as a certificate
    needs. The laws are the controller's own linearisation and, where a region must grow (`reference`), blends of
    its gain toward the gain that maximises the contracted ellipsoid (`_region_gain`), each costing at most
    `COST_BUDGET` more on the linearised plant: a quadratic V's region is tied to the local gain (ball-beam: the
    LQR gain's fastest-rate shape holds 0.35 % of the box, a blend 30 % of the way, +3.4 % cost, 0.82 %).

    With `reference`, a certified region (the saturated LQR's), the target is the first shape, fastest rate first
    and then least blend, that holds `growth` × its volume, scaled down to exactly that volume (the controller's
    own roundest shape where none does). The rate comes first because the margin is what a proof needs: the
    ball-beam's LQR proves its fastest shape but not its 0.9-rate one, which holds twice as much. Without
    `reference`, the controller's own 0.9-rate shape. `rate` is how fast the chosen law's linearisation contracts
    the chosen V: what the stage asks of the controller.
    """
    from lipnet.certify.roa import linearisation, mlp_policy, region_box, volume_share

    w = region_box(plant, box)
    n = plant.n_x
    a_cl = linearisation(plant, mlp_policy(controller))
    own = _shapes(a_cl, w)
    if not own:  # an unstable or odd linearisation: the box's own inscribed ellipsoid
        return np.diag(1.0 / w**2) * n, 0.999
    P, law = own.get(0.9, list(own.values())[-1]), a_cl
    if reference and reference.get("certified") and reference.get("P") and reference.get("rho", 0) > 0:
        goal = growth * volume_share(np.asarray(reference["P"], dtype=np.float64), float(reference["rho"]), w)
        P, law = list(own.values())[-1], a_cl
        laws = list(_blended_shapes(plant, a_cl, w, own))
        hits = [(shapes[t], a_blend) for t in TARGET_RATES for a_blend, shapes in laws
                if t in shapes and volume_share(shapes[t], 1.0, w) >= goal]
        if hits:
            S, law = hits[0]
            P = S / (goal / volume_share(S, 1.0, w)) ** (2.0 / n)  # shrunk to the goal
    return P, min(_rate(law, P), 0.999)


def _rate(a: np.ndarray, P: np.ndarray) -> float:
    """`‖A‖_P`: how fast `x ↦ A x` contracts `V = xᵀ P x` (per step, in V's norm)."""
    L = np.linalg.cholesky(P)
    M = np.linalg.solve(L, a.T @ P @ a) @ np.linalg.inv(L).T  # Aᵀ P A relative to P
    return math.sqrt(max(float(np.linalg.eigvalsh(0.5 * (M + M.T))[-1]), 0.0))


def _shapes(a: np.ndarray, w: np.ndarray) -> dict:
    """`{t: P}`: the largest ellipsoids in the box contracted by `a` at the rates `TARGET_RATES` (fastest first)."""
    from lipnet.certify.roa import shaped_lyapunov

    radius = float(np.max(np.abs(np.linalg.eigvals(a))))
    if radius >= 1:
        return {}
    found = {t: shaped_lyapunov(a, w, radius + (1 - radius) * t) for t in TARGET_RATES}
    return {t: S for t, S in found.items() if S is not None}


def _blended_shapes(plant, a_cl: np.ndarray, w: np.ndarray, own: dict):
    """`(A − B K_α, its shapes)` for the blends `BLENDS` within `COST_BUDGET`, least blend first (α = 0: `own`)."""
    yield a_cl, own
    try:
        from plants import lqr as solve_lqr

        lin = solve_lqr(plant)
        A, B = np.asarray(lin.A, dtype=np.float64), np.asarray(lin.B, dtype=np.float64)
        k_own = np.linalg.lstsq(B, A - a_cl, rcond=None)[0]  # a_cl = A − B K_π
        k_roa = _region_gain(plant, A, B, w, a_cl)
    except Exception:  # noqa: BLE001 - no linear design (a plant python-control cannot handle): own shapes only
        return
    if k_roa is None:
        return
    Q, R = np.asarray(plant.Q, dtype=np.float64), np.asarray(plant.R, dtype=np.float64)
    base = _lq_cost(A, B, k_own, Q, R, w)
    for alpha in BLENDS[1:]:
        k = (1 - alpha) * k_own + alpha * k_roa
        if not _lq_cost(A, B, k, Q, R, w) <= base * (1 + COST_BUDGET):
            return  # the blends' cost grows with α (measured): a gentler one would cost more still
        yield A - B @ k, _shapes(A - B @ k, w)


def _lq_cost(A, B, K, Q, R, w) -> float:
    """The linear loop's quadratic cost from starts uniform in the box (`tr(P_K diag(w²))`), inf if unstable."""
    import scipy.linalg

    a = A - B @ K
    if np.max(np.abs(np.linalg.eigvals(a))) >= 1:
        return math.inf
    P = scipy.linalg.solve_discrete_lyapunov(a.T, Q + K.T @ R @ K)
    return float(np.trace(P @ np.diag(w**2)))


def _region_gain(plant, A, B, w, a_cl) -> np.ndarray | None:
    """The linear gain with the largest ellipsoid in the box that it keeps unsaturated and contracts at the 0.9
    rate of the controller's loop: `max log det S` with `A S − B Y` contracted, `diag S ≤ w²`, `|Y_i S⁻¹ x| ≤ ū_i` on
    the ellipsoid (`K = Y S⁻¹`, the classic invariant-ellipsoid LMI); None where the SDP fails."""
    import cvxpy as cp

    n, m = B.shape
    radius = float(np.max(np.abs(np.linalg.eigvals(a_cl))))
    rate = radius + (1 - radius) * 0.9
    S, Y = cp.Variable((n, n), PSD=True), cp.Variable((m, n))
    cons = [cp.bmat([[rate**2 * S, A @ S - B @ Y], [(A @ S - B @ Y).T, S]]) >> 0, cp.diag(S) <= w**2]
    u_eq = np.asarray(plant.u_eq, dtype=np.float64).reshape(-1)
    for i in range(m):
        lo = -np.inf if plant.u_low is None else float(np.asarray(plant.u_low).reshape(-1)[i])
        hi = np.inf if plant.u_high is None else float(np.asarray(plant.u_high).reshape(-1)[i])
        room = min(u_eq[i] - lo, hi - u_eq[i])
        if np.isfinite(room) and room > 0:
            cons.append(cp.bmat([[np.array([[room**2]]), Y[i:i + 1, :]], [Y[i:i + 1, :].T, S]]) >> 0)
    prob = cp.Problem(cp.Maximize(cp.log_det(S)), cons)
    try:
        prob.solve(solver="CLARABEL")
    except Exception:  # noqa: BLE001 - a solver failure only means no gentler law is offered
        return None
    if S.value is None or prob.status not in ("optimal", "optimal_inaccurate"):
        return None
    return Y.value @ np.linalg.inv(0.5 * (S.value + S.value.T))


class LyapunovObjective:
    """`weight ×` the mean relative Lyapunov violation on `{V ≤ 1}` (module docstring), plus the base objective
    unless it is None (the `--roa` stage's case: its cost is guarded by the stage's keep-best instead)."""

    name = "lyapunov"

    def __init__(self, plant, base, controller, P: np.ndarray, rate: float, batch: int = 256,
                 pgd_steps: int = 3, weight: float = 10.0):
        self.plant, self.base, self.controller = plant, base, controller
        dtype = next(controller.parameters()).dtype
        self.P = torch.as_tensor(P, dtype=dtype)
        L = np.linalg.cholesky(np.asarray(P, dtype=np.float64))  # P = L Lᵀ: x − x_eq = L⁻ᵀ z, V = |z|²
        self.Linv = torch.as_tensor(np.linalg.inv(L), dtype=dtype)  # rows: (L⁻ᵀ z)ᵀ = zᵀ L⁻¹
        self.x_eq = torch.as_tensor(plant.x_eq, dtype=dtype)
        self.kappa = 0.1 * (1.0 - rate**2)
        self.batch, self.pgd_steps, self.weight = int(batch), int(pgd_steps), float(weight)
        self.dtype = dtype

    def _V(self, x: torch.Tensor) -> torch.Tensor:
        e = x - self.x_eq
        return torch.einsum("bi,ij,bj->b", e, self.P, e)

    def violation(self, controller, x: torch.Tensor) -> torch.Tensor:
        """`relu(V(F(x)) / V(x) − (1 − κ))` per state."""
        nxt = self.plant.step(x, controller(x))
        return torch.relu(self._V(nxt) / self._V(x).clamp_min(1e-12) - (1.0 - self.kappa))

    def _from_ball(self, z: torch.Tensor) -> torch.Tensor:
        return self.x_eq + z @ self.Linv

    def sample(self, generator: torch.Generator) -> dict:
        """Training states for the base objective, and states in `{V ≤ 1}` moved toward violations by PGD."""
        n = self.plant.n_x
        x0 = (None if self.base is None else
              self.plant.sample_initial(self.batch, "train", generator=generator, dtype=self.dtype))
        z = torch.randn(self.batch, n, generator=generator, dtype=self.dtype)
        z = z / z.norm(dim=-1, keepdim=True) * torch.rand(self.batch, 1, generator=generator,
                                                          dtype=self.dtype) ** (1.0 / n)
        step = 0.25 / math.sqrt(n)
        flags = [(p, p.requires_grad) for p in self.controller.parameters()]
        for p, _ in flags:
            p.requires_grad_(False)
        try:
            for _ in range(self.pgd_steps):
                zz = z.detach().requires_grad_(True)
                with torch.enable_grad():
                    v = self.violation(self.controller, self._from_ball(zz)).sum()
                    (g,) = torch.autograd.grad(v, zz)
                z = zz.detach() + step * g / g.norm(dim=-1, keepdim=True).clamp_min(1e-12)
                z = z / z.norm(dim=-1, keepdim=True).clamp_min(1.0)  # back into the unit ball
        finally:
            for p, flag in flags:
                p.requires_grad_(flag)
        z = z[z.norm(dim=-1) > 1e-3]  # V(x) ≈ 0 carries no decrease information
        return {"x0": x0, "x": self._from_ball(z).detach()}

    def __call__(self, policy, inputs: dict) -> torch.Tensor:
        penalty = self.weight * self.violation(policy, inputs["x"]).mean()
        return penalty if self.base is None else self.base(policy, inputs["x0"]) + penalty
