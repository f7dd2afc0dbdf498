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


def target_shape(plant, controller, box=None) -> tuple[np.ndarray, float]:
    """`(P, rate)`: the V the stage trains for, from the controller's closed loop linearised at x_eq."""
    from lipnet.certify.roa import linearisation, mlp_policy, region_box, shaped_lyapunov

    w = region_box(plant, box)
    a_cl = linearisation(plant, mlp_policy(controller))
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
