"""`manifold-adam`: Adam in the global tangent space of homogeneous manifolds (paper 001, Brantner 2023).

Every parameter declares its manifold (`lipnet.manifolds.manifold_of`):

- Euclidean: exactly `torch.optim.Adam` (same formulas, same operation order, same state keys).
- Stiefel St(n, N) (N×n frame): the gradient is lifted into `g^hor` at the carried global section λ,
  packed as `[A; B]` (N×n); first and second moments are Adam's, elementwise, on those coordinates;
  the bias-corrected step `U = −lr m̂/(√v̂ + ε) ∈ g^hor` moves the section, `λ ← λ Retr(U)`, and the
  parameter is `λE` (Cayley or exponential, through a 2n×2n problem).
- Grassmann Gr(n, N): as Stiefel with `A = 0`; the second moment is shared along each row of B (averaged
  over the n columns) so that the step commutes with a change of basis `Y → YR` and depends only on span(Y).
- Sphere (a tensor of unit Frobenius norm, any shape): St(1, N) on its flattened vector. Above
  `max_section_dim` entries (a 64×64 layer has N = 4096: λ would be 134 MB and its QR a minute) the carried
  N×N section is replaced by the Householder section `λ(y) = H P` (H reflects a fixed axis onto y),
  recomputed from y at every step in O(N): the moments are then transported by `λ(y')λ(y)ᵀ`, a rotation
  close to the identity, instead of being carried exactly as in the paper.

λ lives in the optimizer state (`state[p]["section"]`, float64 by default even for float32 parameters, so
that orthogonality does not drift with the number of steps; the parameter is λE rounded to its dtype).
If the parameter is changed outside the optimiser (a checkpoint load, a projection), the section is
re-synchronised to it at the next step, keeping the old complement as closely as possible.
"""

from __future__ import annotations

from itertools import chain

import torch

from lipnet.exceptions import LipnetArgument, LipnetValue
from lipnet.manifolds import Manifold, Stiefel, manifold_of
from lipnet.manifolds import global_tangent as gt

from .base import LipnetOptimizer

__all__ = ["ManifoldAdam", "DEFAULT_LR"]

#: chosen on the training benchmark (`benchmarks/optimizers.py`, lipnet's default controllers: 64×64 Frobenius
#: directions, i.e. spheres in R^4096): at 3e-2 every plant diverged (cost/LQR optimum 20–7e4, 0 % stabilised) —
#: Adam's per-coordinate step of size lr in the global tangent space turns a sphere in R^N by about lr·sqrt(N),
#: ≈ 1.9 rad per step at N = 4096; at 1e-3: double integrator 1.0002, mass-spring-damper 1.0084, pendulum 1.0713,
#: all 100 % stabilised (80 steps). The Stiefel toys of `benchmarks/manifold_adam.py` (St(8, 32)) prefer 3e-2 —
#: pass `--lr` there; small frames converge more slowly at the default.
DEFAULT_LR = 1e-3

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_MANIFOLD_KEYS = ("section", "point", "exp_avg", "exp_avg_sq")


def _dtype(value) -> torch.dtype | None:
    if value is None or isinstance(value, torch.dtype):
        if value not in (None, torch.float32, torch.float64):
            raise LipnetValue(f"section_dtype must be float32, float64 or None, got {value}")
        return value
    if value in _DTYPES:
        return _DTYPES[value]
    raise LipnetValue(f"section_dtype must be 'float32', 'float64' or None (the parameter's dtype), got {value!r}")


def _manifold(p: torch.Tensor) -> Manifold:
    """The parameter's manifold, checked to be one this optimiser steps: flat, or a frame (global tangent space)."""
    manifold = manifold_of(p)
    if not manifold.flat:
        try:
            manifold.frame(p)
        except TypeError:
            raise LipnetArgument(f"ManifoldAdam handles Euclidean, Sphere, Stiefel and Grassmann parameters, not "
                                 f"{manifold!r}; give this parameter to another optimiser") from None
    return manifold


class ManifoldAdam(LipnetOptimizer, torch.optim.Optimizer):
    """Adam for a mix of Euclidean, sphere, Stiefel and Grassmann parameters, stepping in `g^hor`.

    Parameters
    ----------
    params : iterable of parameters or parameter groups (each parameter's manifold is read from it).
    lr : learning rate (default `DEFAULT_LR`, chosen without tuning per problem; see the module docs).
    betas, eps : as in `torch.optim.Adam`.
    weight_decay : L2 penalty added to Euclidean gradients (as `torch.optim.Adam`); on a manifold of
        constant norm its Riemannian gradient is zero, so it is not applied there.
    retraction : `cayley` (default) or `exp` (the canonical geodesic).
    section_dtype : dtype of λ and the moments of manifold parameters: `float64` (default), `float32`,
        or None for the parameter's own dtype (the paper's plain scheme, whose rounding error accumulates).
    max_section_dim : sphere parameters with more entries than this use the O(N) Householder section.
    """

    def __init__(self, params, lr: float = DEFAULT_LR, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, retraction: str = "cayley",
                 section_dtype="float64", max_section_dim: int = 512):
        if not lr > 0:
            raise LipnetValue(f"lr must be positive, got {lr}")
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise LipnetValue(f"betas must be two numbers in [0, 1), got {betas}")
        if eps < 0 or weight_decay < 0:
            raise LipnetValue(f"eps and weight_decay must be ≥ 0, got eps={eps}, weight_decay={weight_decay}")
        if retraction not in gt.RETRACTIONS:
            raise LipnetValue(f"unknown retraction {retraction!r}; valid: {', '.join(gt.RETRACTIONS)}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, retraction=retraction,
                        section_dtype=_dtype(section_dtype), max_section_dim=int(max_section_dim))
        super().__init__(params, defaults)
        for p in chain.from_iterable(g["params"] for g in self.param_groups):
            _manifold(p)  # fail at construction, not at the first step

    @classmethod
    def from_model(cls, model: torch.nn.Module, lr: float | None = None, **options) -> ManifoldAdam:
        """The optimiser over all of `model`'s parameters (`lr=None`: `DEFAULT_LR`)."""
        return cls(model.parameters(), lr=DEFAULT_LR if lr is None else lr, **options)

    @torch.no_grad()
    def step(self, closure=None):
        """One Adam step for every parameter with a gradient; `closure` (torch contract) returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("ManifoldAdam does not support sparse gradients; use dense parameters")
                manifold = _manifold(p)
                if manifold.flat:
                    self._euclidean_step(p, group)
                else:
                    self._manifold_step(p, manifold, group)
        return loss

    def _euclidean_step(self, p: torch.Tensor, group: dict) -> None:
        # torch.optim.Adam's single-tensor path (the CPU default), operation for operation.
        state = self.state[p]
        if not state:
            state["step"] = torch.tensor(0.0, dtype=torch.get_default_dtype())
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        beta1, beta2 = group["betas"]
        grad = p.grad
        if group["weight_decay"] != 0:
            grad = grad.add(p, alpha=group["weight_decay"])
        state["step"] += 1
        state["exp_avg"].lerp_(grad, 1 - beta1)
        state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step = state["step"].item()
        step_size = group["lr"] / (1 - beta1**step)
        denom = (state["exp_avg_sq"].sqrt() / (1 - beta2**step) ** 0.5).add_(group["eps"])
        p.addcdiv_(state["exp_avg"], denom, value=-step_size)

    def _section(self, p: torch.Tensor, manifold: Manifold, dtype: torch.dtype) -> torch.Tensor:
        """The carried section of `p`, created or re-synchronised when `p` is not its first columns."""
        state = self.state[p]
        y = manifold.frame(p.detach())
        small = y.shape[1]
        section = state.get("section")
        if section is not None and section.dtype == dtype and torch.equal(section[:, :small].to(y.dtype), y):
            return section
        point = Stiefel().projx(y.to(dtype))
        hint = None if section is None else section[:, small:].to(dtype)
        state["section"] = gt.global_section(point, hint)
        return state["section"]

    def _point(self, p: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, int]:
        """The sphere's float master point and Householder pivot, re-synchronised to `p` when it changed."""
        state = self.state[p]
        y = p.detach().reshape(-1, 1)
        point = state.get("point")
        if point is None or point.dtype != dtype or not torch.equal(point.to(y.dtype), y):
            point = y.to(dtype) / y.to(dtype).norm()
            state["point"] = point
        pivot = state.get("pivot")
        if pivot is None or 1.0 - float(point[pivot]) < 0.5:
            # a new axis far from y keeps H well conditioned (it is singular at y = e_pivot)
            new = gt.householder_pivot(point)
            if pivot is not None and "exp_avg" in state:  # re-express the first moment in the new frame
                ambient = gt.householder_apply(point, pivot, state["exp_avg"])
                state["exp_avg"] = gt.householder_lift(point, new, ambient)
            pivot = state["pivot"] = new
        return point, pivot

    def _manifold_step(self, p: torch.Tensor, manifold: Manifold, group: dict) -> None:
        state = self.state[p]
        dtype = group["section_dtype"] or p.dtype
        compact = manifold.householder and p.numel() > group["max_section_dim"]
        if compact:
            point, pivot = self._point(p, dtype)
            big, small = point.shape
        else:
            section = self._section(p, manifold, dtype)
            big, small = section.shape[0], manifold.frame(p).shape[1]
        grassmann = manifold.grassmann
        if "step" not in state:
            state["step"] = torch.tensor(0.0, dtype=torch.get_default_dtype())
            state["exp_avg"] = torch.zeros(big, small, dtype=dtype, device=p.device)
            state["exp_avg_sq"] = torch.zeros(big, 1 if grassmann else small, dtype=dtype, device=p.device)
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        beta1, beta2 = group["betas"]
        egrad = manifold.frame(p.grad).to(dtype)
        packed = gt.householder_lift(point, pivot, egrad) if compact else gt.lift(section, egrad, grassmann)
        state["step"] += 1
        exp_avg.lerp_(packed, 1 - beta1)
        if grassmann:
            # One second moment per row of B: invariant under Y → YR, so the step depends on span(Y) only.
            exp_avg_sq.mul_(beta2).add_(packed.square().mean(dim=1, keepdim=True), alpha=1 - beta2)
        else:
            exp_avg_sq.mul_(beta2).addcmul_(packed, packed, value=1 - beta2)
        step = state["step"].item()
        step_size = group["lr"] / (1 - beta1**step)
        denom = (exp_avg_sq.sqrt() / (1 - beta2**step) ** 0.5).add_(group["eps"])
        update = exp_avg.div(denom).mul_(-step_size)  # skew A block: m_A skew, v_A symmetric
        if compact:
            point = gt.householder_apply(point, pivot, gt.retract_point(update, group["retraction"]))
            state["point"] = point
            p.copy_(point.reshape(p.shape))
            return
        section = gt.move_section(section, update, group["retraction"])
        state["section"] = section
        p.copy_(section[:, :small].reshape(p.shape))

    def load_state_dict(self, state_dict: dict) -> None:
        """As torch's, but keeps the sections and moments of manifold parameters in their saved dtype."""
        saved_ids = chain.from_iterable(g["params"] for g in state_dict["param_groups"])
        params = chain.from_iterable(g["params"] for g in self.param_groups)
        keep = {}
        for pid, p in zip(saved_ids, params, strict=False):
            entry = state_dict["state"].get(pid, {})
            if "section" in entry or "point" in entry:
                keep[p] = {k: entry[k].clone() for k in _MANIFOLD_KEYS if k in entry}
        super().load_state_dict(state_dict)
        for p, entries in keep.items():
            for k, v in entries.items():
                self.state[p][k] = v.to(p.device)
