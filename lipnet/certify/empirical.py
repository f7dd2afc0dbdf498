"""Empirical lower bounds on the Lipschitz constant over a state region (estimates, never certificates).

Two searches, both in float64 on the folded network:

* the largest ‖J(x)‖₂ found by multi-start gradient ascent in the box (ReLU/GroupSort Jacobians are piecewise
  constant, so the ascent follows a smoothed surrogate — softplus(βz)/β for ReLU, a smooth max for GroupSort —
  with β growing along the ascent, while every recorded value is
  the exact Jacobian norm of the real network);
* the largest ‖f(x) − f(y)‖/‖x − y‖ over random pairs in the box at log-spaced distances.

Each value is a lower bound of the network's local Lipschitz constant on the box, hence of its global constant.
The same is reported for the deployed controller (with its output saturation), which can only be smaller.
Both run on raw states through the network's input features (sin/cos of periodic states), i.e. the true forward.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from lipnet._threads import single_thread
from lipnet.exceptions import LipnetDimension

from .network import MLP, mlp_of

__all__ = ["Region", "LowerBound", "empirical_lower_bound", "network_forward", "network_jacobian"]


@dataclass
class Region:
    """An axis-aligned box of states `[low, high]` with a note of where it came from."""

    low: np.ndarray
    high: np.ndarray
    source: str = "given"

    def __post_init__(self):
        self.low = np.asarray(self.low, dtype=np.float64).reshape(-1)
        self.high = np.asarray(self.high, dtype=np.float64).reshape(-1)
        if self.low.shape != self.high.shape or (self.high < self.low).any():
            raise LipnetDimension(f"region needs low ≤ high of equal length, got {self.low} / {self.high}")

    @classmethod
    def around(cls, centre, half_width, source: str = "given") -> Region:
        c = np.asarray(centre, dtype=np.float64)
        h = np.abs(np.asarray(half_width, dtype=np.float64))
        return cls(c - h, c + h, source)

    def to_dict(self) -> dict:
        return {"low": self.low.tolist(), "high": self.high.tolist(), "source": self.source}


@dataclass
class LowerBound:
    """Result of the empirical search: `value` = max of the Jacobian and finite-difference searches."""

    value: float
    jacobian_max: float
    finite_difference_max: float
    controller_value: float
    region: dict
    how: str
    argmax: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _act(name: str, beta: float | None):
    if name == "relu":
        return (lambda z: torch.nn.functional.softplus(z, beta=beta)) if beta else torch.relu
    if name == "tanh":
        return torch.tanh
    if name == "groupsort":
        def gs(z):
            a, b = z[..., 0::2], z[..., 1::2]
            if beta:  # smooth max: (a+b)/2 + sqrt((a−b)²/4 + β⁻²); min = a + b − max
                hi = (a + b) / 2 + torch.sqrt((a - b) ** 2 / 4 + 1 / beta**2)
                lo = a + b - hi
            else:
                hi, lo = torch.maximum(a, b), torch.minimum(a, b)
            return torch.stack((hi, lo), dim=-1).flatten(-2)
        return gs
    raise LipnetDimension(f"no empirical search for activation {name!r}")


def network_forward(net: MLP, x: torch.Tensor, beta: float | None = None, saturate: bool = False,
                    preactivations: list | None = None) -> torch.Tensor:
    """The folded network on raw states in float64 torch, input features included (optionally with a softplus
    surrogate and the output saturation): the one float64 forward pass of the folded weights.

    `preactivations`, when given, receives every layer's pre-activation (the output layer's included).
    """
    act = _act(net.activation, beta)
    z = net.features(x)
    for i, (w, b) in enumerate(zip(net.weights, net.biases, strict=True)):
        z = z @ torch.as_tensor(w.T) + torch.as_tensor(b)
        if preactivations is not None:
            preactivations.append(z)
        if i < len(net.weights) - 1:
            z = act(z)
    if saturate and net.saturated:
        lo, hi = torch.as_tensor(net.u_low), torch.as_tensor(net.u_high)
        if net.saturation == "clip":
            return torch.clamp(z, lo, hi)
        finite = torch.isfinite(lo) & torch.isfinite(hi)
        centre = torch.where(finite, (lo + hi) / 2, torch.zeros_like(lo))
        half = torch.where(finite, (hi - lo) / 2, torch.ones_like(lo))
        return torch.where(finite, centre + half * torch.tanh((z - centre) / half), torch.clamp(z, lo, hi))
    return z


def network_jacobian(net: MLP, x: torch.Tensor, beta: float | None = None, saturate: bool = False) -> torch.Tensor:
    """Batched Jacobians `[batch, n_out, n_in]` (differentiable in x when the activation is smooth)."""
    def single(v):
        return network_forward(net, v[None], beta=beta, saturate=saturate)[0]
    return torch.func.vmap(torch.func.jacrev(single))(x)


def _spec(j: torch.Tensor) -> torch.Tensor:
    return torch.linalg.matrix_norm(j, ord=2)


def empirical_lower_bound(controller_or_mlp, region: Region, n_starts: int = 16, steps: int = 40,
                          n_samples: int = 4096, n_pairs: int = 4096, seed: int = 0) -> LowerBound:
    """Largest ‖J(x)‖₂ by multi-start ascent plus the largest finite-difference ratio, over `region`."""
    net = mlp_of(controller_or_mlp)
    if region.low.size != net.n_in:
        raise LipnetDimension(f"region has {region.low.size} coordinates, the network takes {net.n_in}")
    gen = torch.Generator().manual_seed(seed)
    lo, hi = torch.as_tensor(region.low), torch.as_tensor(region.high)
    width = hi - lo

    def sample(n):
        return lo + width * torch.rand(n, net.n_in, generator=gen, dtype=torch.float64)

    with single_thread():
        # 1) Exact Jacobian norms at random points; the best become ascent starts.
        xs = sample(n_samples)
        with torch.no_grad():
            norms = _spec(network_jacobian(net, xs))
        best = float(norms.max())
        argmax = xs[int(norms.argmax())]
        k = min(n_starts, n_samples)
        x = xs[torch.topk(norms, k).indices].clone()
        smooth = net.activation == "tanh"
        scale = float(width.max()) if float(width.max()) > 0 else 1.0
        if float(width.max()) > 0:
            x.requires_grad_(True)
            opt = torch.optim.Adam([x], lr=0.01 * scale)
            for i in range(steps):
                beta = None if smooth else 10.0 * 2 ** (i * 6 / max(steps, 1)) / scale
                obj = _spec(network_jacobian(net, x, beta=beta)).sum()
                if not obj.requires_grad:  # a linear network: the Jacobian is constant, nothing to ascend
                    break
                opt.zero_grad()
                (-obj).backward()
                if x.grad is not None and torch.isfinite(x.grad).all():
                    opt.step()
                with torch.no_grad():
                    x.copy_(torch.minimum(torch.maximum(x, lo), hi))
                    exact = _spec(network_jacobian(net, x))
                    if float(exact.max()) > best:
                        best = float(exact.max())
                        argmax = x[int(exact.argmax())].detach().clone()
        # 2) Finite-difference ratios over random pairs at log-spaced distances.
        with torch.no_grad():
            a = sample(n_pairs)
            direction = torch.randn(n_pairs, net.n_in, generator=gen, dtype=torch.float64)
            direction = direction / direction.norm(dim=1, keepdim=True)
            # Distances from 1e-3 of the box up: shorter ones make the float64 ratio noisy (it could overshoot).
            dist = scale * torch.logspace(-3, 0, n_pairs, dtype=torch.float64)
            b = torch.minimum(torch.maximum(a + dist[:, None] * direction, lo), hi)
            sep = (a - b).norm(dim=1)
            keep = sep > 0
            ratio = torch.zeros(n_pairs, dtype=torch.float64)
            ratio_c = torch.zeros(n_pairs, dtype=torch.float64)
            ratio[keep] = (network_forward(net, a[keep]) - network_forward(net, b[keep])).norm(dim=1) / sep[keep]
            ratio_c[keep] = ((network_forward(net, a[keep], saturate=True)
                              - network_forward(net, b[keep], saturate=True)).norm(dim=1) / sep[keep])
            fd = float(ratio.max()) if n_pairs else 0.0
            # The deployed controller, with saturation: exact Jacobians at the same points plus its FD ratios.
            pts = torch.cat([xs, x.detach()]) if n_samples else x.detach()
            ctrl = max(float(_spec(network_jacobian(net, pts, saturate=True)).max()),
                       float(ratio_c.max()) if n_pairs else 0.0)
    how = (f"max exact ‖J(x)‖₂ over {n_samples} uniform samples and {k}-start Adam ascent ({steps} steps"
           f"{'' if smooth else ', softplus-smoothed gradient, exact values'}); max finite-difference ratio over "
           f"{n_pairs} random pairs at distances 1e-3..1 × box width. Lower bound of the network's Lipschitz "
           "constant on the region (hence of its global constant); controller_value includes the saturation.")
    return LowerBound(value=max(best, fd), jacobian_max=best, finite_difference_max=fd, controller_value=ctrl,
                      region=region.to_dict(), how=how, argmax=argmax.tolist())
