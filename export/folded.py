"""A plain torch module equal to a trained `Controller`: folded weights, same activation and saturation.

The export graph must hold no parametrisation (no norm, no SVD, no manifold), only the function the
controller computes in raw units: `u = sat(W_D σ(⋯ σ(W_1 x + b_1)) + b_D)`. GroupSort pairs `(2i, 2i+1)`
are made contiguous halves by permuting the rows of the layer before and the columns of the layer after
(exact: a permutation moves numbers, it rounds nothing), so the graph needs only Slice, Max, Min and Concat.

Periodic states reach the first layer as the raw features `f(x)` of `Controller.folded_weights()`:
`d = x − c` (c the periodic centres, 0 elsewhere), `Where(periodic, Sin(d), x)`, then `Cos(d_p) − 1` of one
Slice per periodic p, concatenated. The features are computed in float32 even in an fp16 model: an angle far
outside [−π, π] has no useful float16 representation (spacing 0.5 at 1000 rad), its sine does.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = ["FoldedController", "fold_controller", "saturation_plan"]


def saturation_plan(u_low: np.ndarray, u_high: np.ndarray, saturation: str, has_limits: bool) -> dict:
    """Per-channel saturation as the Controller applies it: which channels are tanh, clipped or free.

    Returns a dict with `mode` (`none`, `tanh`, `clip` or `mixed`), boolean `tanh` mask, and float64
    `low`, `high`, `centre`, `half` arrays (centre 0 and half 1 where a channel is not tanh-saturated).
    """
    lo, hi = np.asarray(u_low, np.float64), np.asarray(u_high, np.float64)
    n = lo.size
    limited = np.isfinite(lo) | np.isfinite(hi)
    if not has_limits or saturation == "none" or not limited.any():
        tanh = np.zeros(n, bool)
        clip = np.zeros(n, bool)
    elif saturation == "clip":
        tanh, clip = np.zeros(n, bool), limited
    else:  # "tanh": smooth where two-sided, clipped where one-sided (Controller.saturate)
        tanh = np.isfinite(lo) & np.isfinite(hi)
        clip = limited & ~tanh
    with np.errstate(invalid="ignore"):  # inf - inf on unlimited channels, masked out just below
        centre = np.where(tanh, (lo + hi) / 2, 0.0)
        half = np.where(tanh, (hi - lo) / 2, 1.0)
    if tanh.any() and clip.any():
        mode = "mixed"
    elif tanh.any():
        mode = "tanh"
    elif clip.any():
        mode = "clip"
    else:
        mode = "none"
    return {"mode": mode, "tanh": tanh, "clip": clip, "low": lo, "high": hi, "centre": centre, "half": half}


def _groupsort_permuted(weights: list[tuple[np.ndarray, np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray]]:
    # Rows of hidden layer l: evens first, then odds (so the pairs are the two halves); the next layer's
    # columns follow the MaxMin output order [max_0, min_0, max_1, ...] -> [max_0, max_1, ..., min_0, ...].
    out = [(w.copy(), b.copy()) for w, b in weights]
    for l in range(len(out) - 1):
        w, b = out[l]
        n = w.shape[0]
        perm = np.concatenate([np.arange(0, n, 2), np.arange(1, n, 2)])
        out[l] = (w[perm], b[perm])
        w_next, b_next = out[l + 1]
        out[l + 1] = (w_next[:, perm], b_next)
    return out


class _HalfMaxMin(nn.Module):
    """GroupSort of size 2 on contiguous halves: `[max(a, b), min(a, b)]` with `a, b` the two halves."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        k = z.shape[-1] // 2
        a, b = z[..., :k], z[..., k:]
        return torch.cat((torch.maximum(a, b), torch.minimum(a, b)), dim=-1)


class FoldedController(nn.Module):
    """`sat(W_D σ(⋯ σ(W_1 x + b_1)) + b_D)` with plain `nn.Linear` layers (no parametrisation).

    Parameters
    ----------
    weights : float64 `(W, b)` per layer in raw units (`Controller.folded_weights()`).
    activation : `relu`, `tanh` or `groupsort`.
    plan : `saturation_plan(...)` of the controller.
    dtype : float32 for the standard model, float16 for `--fp16` (inputs and outputs stay float32).
    periodic, periodic_center : periodic state indices and their centres (`Controller.periodic_center()`).
    """

    def __init__(self, weights, activation: str, plan: dict, dtype: torch.dtype = torch.float32,
                 periodic=(), periodic_center=None):
        super().__init__()
        if activation == "groupsort":
            weights = _groupsort_permuted(weights)
            self.act = _HalfMaxMin()
        elif activation == "relu":
            self.act = nn.ReLU()
        elif activation == "tanh":
            self.act = nn.Tanh()
        else:
            raise ValueError(f"unknown activation {activation!r}; valid: relu, tanh, groupsort")
        self.compute_dtype = dtype
        layers = []
        for w, b in weights:
            lin = nn.Linear(w.shape[1], w.shape[0], bias=True)
            with torch.no_grad():
                lin.weight.copy_(torch.as_tensor(w, dtype=torch.float64))
                lin.bias.copy_(torch.as_tensor(b, dtype=torch.float64))
            layers.append(lin.to(dtype))
        self.layers = nn.ModuleList(layers)
        self.mode = plan["mode"]

        def buf(name, value):
            self.register_buffer(name, torch.as_tensor(np.asarray(value, np.float64)).to(dtype))

        buf("sat_low", plan["low"])
        buf("sat_high", plan["high"])
        buf("sat_centre", plan["centre"])
        buf("sat_half", plan["half"])
        self.register_buffer("tanh_mask", torch.as_tensor(plan["tanh"]))
        self.periodic = tuple(int(p) for p in periodic)
        self.n_x, self.n_u = weights[0][0].shape[1] - len(self.periodic), weights[-1][0].shape[0]
        if self.periodic:  # no buffers otherwise: the graph of a controller without angles is unchanged
            centre, mask = np.zeros(self.n_x), np.zeros(self.n_x, bool)
            centre[list(self.periodic)] = np.asarray(periodic_center, np.float64)
            mask[list(self.periodic)] = True
            self.register_buffer("feat_centre", torch.as_tensor(centre).to(torch.float32))
            self.register_buffer("feat_mask", torch.as_tensor(mask))

    def features(self, state: torch.Tensor) -> torch.Tensor:
        """Raw input features `f(x)` in float32 (the state itself without periodic states)."""
        if not self.periodic:
            return state
        d = state - self.feat_centre  # exact for the non-periodic columns (centre 0), unused there anyway
        # Where keeps the export graph to elementwise ops; sin of a non-periodic state is computed but not used.
        z = torch.where(self.feat_mask, torch.sin(d), state)
        dp = torch.cat([d[..., p:p + 1] for p in self.periodic], dim=-1)
        return torch.cat([z, torch.cos(dp) - 1.0], dim=-1)

    def saturate(self, v: torch.Tensor) -> torch.Tensor:
        """The controller's saturation, written with the same formula as `Controller.saturate`.

        The smooth branch is clamped to the limits as well: onnxruntime's Tanh returns up to 1 + 2⁻²³, which
        would put a saturated command one float32 step outside the actuator range.
        """
        if self.mode == "none":
            return v
        if self.mode != "clip":
            smooth = self.sat_centre + self.sat_half * torch.tanh((v - self.sat_centre) / self.sat_half)
            v = smooth if self.mode == "tanh" else torch.where(self.tanh_mask, smooth, v)
        return torch.minimum(torch.maximum(v, self.sat_low), self.sat_high)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        z = (self.features(state.to(torch.float32)) if self.periodic else state).to(self.compute_dtype)
        for i, lin in enumerate(self.layers):
            z = lin(z)
            if i < len(self.layers) - 1:
                z = self.act(z)
        return self.saturate(z).to(torch.float32)


def fold_controller(controller, dtype: torch.dtype = torch.float32) -> FoldedController:
    """The plain, parametrisation-free module computing the same function as `controller` (eval mode)."""
    lo, hi = controller.limits()
    plan = saturation_plan(lo, hi, controller.saturation, controller.has_limits)
    periodic = tuple(getattr(controller, "periodic", ()))
    return FoldedController(controller.folded_weights(), controller.activation, plan, dtype=dtype,
                            periodic=periodic,
                            periodic_center=controller.periodic_center() if periodic else None).eval()
