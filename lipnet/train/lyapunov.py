"""Training toward a larger certified region of attraction (`lipnet train --roa`).

After the main training, a last stage keeps the closed-loop cost and adds a Lyapunov-decrease penalty, as in Yang,
Dai et al., "Lyapunov-stable neural control for state and output feedback" (ICML 2024): for a fixed quadratic
`V(x) = (x − x_eq)ᵀ P (x − x_eq)` whose unit level set is the largest ellipsoid in the target box that the
controller's own linearised loop contracts (`lipnet.certify.roa.shaped_lyapunov`), the penalty is the mean of
`relu(V(F(x)) / V(x) − (1 − κ))` over states drawn uniformly in `{V ≤ 1}` and pushed toward violations by a few
projected-gradient (PGD) ascent steps, the falsifier the paper trains against. The controller keeps its
Lipschitz bound by construction (the layers are unchanged); `lipnet certify` then proves what was gained.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["LyapunovObjective", "target_shape"]


def target_shape(plant, controller, box=None, reference: dict | None = None,
                 growth: float = 2.0) -> tuple[np.ndarray, float]:
    """`(P, rate)`: the V the stage trains for, `{V ≤ 1}` its target region.

    With `reference`, a certified region (the saturated LQR's, `lipnet.certify.roa.certify_region`), the target
    is that ellipsoid grown to `growth` × its volume (within the box): a shape the method already proves for the
    linear law, and a size that beats it. Otherwise the largest ellipsoid in the box that the controller's own
    linearised loop contracts. `rate` is how fast the controller's linearisation contracts that V.
    """
    from lipnet.certify.roa import linearisation, mlp_policy, region_box, shaped_lyapunov

    w = region_box(plant, box)
    a_cl = linearisation(plant, mlp_policy(controller))
    if reference and reference.get("certified") and reference.get("P") and reference.get("rho", 0) > 0:
        P = np.asarray(reference["P"], dtype=np.float64)
        rho_box = float(np.min(w**2 / np.diag(np.linalg.inv(P))))
        P = P / min(float(reference["rho"]) * growth ** (2.0 / plant.n_x), rho_box)
        L = np.linalg.cholesky(P)
        M = np.linalg.solve(L, a_cl.T @ P @ a_cl) @ np.linalg.inv(L).T  # A_clᵀ P A_cl relative to P
        rate = math.sqrt(max(float(np.linalg.eigvalsh(0.5 * (M + M.T))[-1]), 0.0))
        return P, min(rate, 0.999)
    radius = float(np.max(np.abs(np.linalg.eigvals(a_cl))))
    rate = radius + 0.9 * (1.0 - radius) if radius < 1 else 0.999
    P = shaped_lyapunov(a_cl, w, rate) if radius < 1 else None
    if P is None:  # an unstable or odd linearisation: the box's own inscribed ellipsoid
        P = np.diag(1.0 / w**2) * plant.n_x
        rate = 0.999
    return P, rate


class LyapunovObjective:
    """The base objective plus `weight ×` the mean relative Lyapunov violation on `{V ≤ 1}` (module docstring)."""

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
        x0 = self.plant.sample_initial(self.batch, "train", generator=generator, dtype=self.dtype)
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
        return self.base(policy, inputs["x0"]) + self.weight * self.violation(policy, inputs["x"]).mean()
