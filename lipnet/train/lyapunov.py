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

__all__ = ["LyapunovObjective", "target_shape", "TARGET_RATES"]


# Contraction rates of the candidate target shapes, as fractions of the way from ρ(A_cl) to 1: fastest first.
TARGET_RATES = (0.5, 0.9, 0.97)


def target_shape(plant, controller, box=None, reference: dict | None = None,
                 growth: float = 2.0) -> tuple[np.ndarray, float]:
    """`(P, rate)`: the V the stage trains for, `{V ≤ 1}` its target region.

    The shapes are the largest ellipsoids in the box that the controller's own linearised loop contracts
    (`lipnet.certify.roa.shaped_lyapunov`, rates `TARGET_RATES`): a V that decreases near x_eq, as a certificate
    needs. With `reference`, a certified region (the saturated LQR's), the target is the fastest-rate shape that
    holds `growth` × its volume, scaled down to exactly that volume (the roundest shape where none does); without,
    the 0.9-rate shape. `rate` is how fast the controller's linearisation contracts the chosen V.
    """
    from lipnet.certify.roa import _volume_share, linearisation, mlp_policy, region_box, shaped_lyapunov

    w = region_box(plant, box)
    n = plant.n_x
    a_cl = linearisation(plant, mlp_policy(controller))
    radius = float(np.max(np.abs(np.linalg.eigvals(a_cl))))
    found = {} if radius >= 1 else {t: shaped_lyapunov(a_cl, w, radius + (1 - radius) * t) for t in TARGET_RATES}
    found = {t: S for t, S in found.items() if S is not None}
    shapes = list(found.values())
    if not shapes:  # an unstable or odd linearisation: the box's own inscribed ellipsoid
        return np.diag(1.0 / w**2) * n, 0.999
    if reference and reference.get("certified") and reference.get("P") and reference.get("rho", 0) > 0:
        goal = growth * _volume_share(np.asarray(reference["P"], dtype=np.float64), float(reference["rho"]), w)
        P = shapes[-1]
        for S in shapes:
            vol = _volume_share(S, 1.0, w)
            if vol >= goal:
                P = S / (goal / vol) ** (2.0 / n)  # {V ≤ 1} shrunk to the goal's volume
                break
    else:
        P = found.get(0.9, shapes[-1])
    L = np.linalg.cholesky(P)
    M = np.linalg.solve(L, a_cl.T @ P @ a_cl) @ np.linalg.inv(L).T  # A_clᵀ P A_cl relative to P
    rate = math.sqrt(max(float(np.linalg.eigvalsh(0.5 * (M + M.T))[-1]), 0.0))
    return P, min(rate, 0.999)


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
