"""Small differentiable problems shared by the optimiser tests."""

import torch


def closed_loop_cost(model, x0, horizon=12, dt=0.2):
    """Double integrator x⁺ = A x + B u under the controller, cost mean Σ xᵀx + 0.1 uᵀu."""
    a = torch.tensor([[1.0, dt], [0.0, 1.0]], dtype=x0.dtype)
    b = torch.tensor([[0.5 * dt * dt], [dt]], dtype=x0.dtype)
    x, cost = x0, 0.0
    for _ in range(horizon):
        u = model(x)
        cost = cost + (x.pow(2).sum(-1) + 0.1 * u.pow(2).sum(-1)).mean()
        x = x @ a.T + u @ b.T
    return cost / horizon
