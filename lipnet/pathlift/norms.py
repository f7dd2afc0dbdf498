"""Rescaling-invariant ℓ2 Lipschitz upper bound of a ReLU controller from its path-lifting (certificate method).

For `f(x) = W_D σ(⋯ σ(W_1 x + b_1) ⋯) + b_D`, wherever f is differentiable its Jacobian is
`J(x) = W_D Δ_{D−1} W_{D−1} ⋯ Δ_1 W_1` with `Δ_l` diagonal in [0, 1] (the activation slopes), so
`J[k, j]` is a sum over the input-to-output paths j → k of (path value × slopes) and

    |J(x)| ≤ M := |W_D| ⋯ |W_1|   entrywise,   hence   ‖J(x)‖₂ ≤ ‖M‖₂ ≤ ‖M‖_F ≤ Σ_kj M_kj = ‖Φ_in(θ)‖₁,

`Φ_in` being the input-to-output part of the path-lifting (bias paths do not depend on x). The network
is piecewise affine and continuous, so along any segment it is a finite chain of affine pieces, each
with one such Jacobian: `‖f(x) − f(x')‖₂ ≤ ‖M‖₂ ‖x − x'‖₂` for all x, x' (no region needed). In the
norms of path-metrics (Gonon et al.): `‖f(x) − f(x')‖₁ ≤ ‖Φ_in‖₁ ‖x − x'‖_∞`; the conversions used for
ℓ2 are ‖·‖₂ ≤ ‖·‖₁ on the output and ‖·‖_∞ ≤ ‖·‖₂ on the input, which is what `‖Φ_in‖₁ ≥ ‖M‖₂` says.
M is invariant under the ReLU rescaling symmetry, so the bound is too (unlike the product of norms).

With `region=(low, high)` (a box of raw states), neurons that interval arithmetic proves inactive on
the whole box are removed from M: every segment in the (convex) box sees them switched off, so the
bound then holds for x, x' in the box only. The controller's output saturation is 1-Lipschitz per
channel, so the bound of the network bounds the saturated controller too. With periodic states the network's
inputs are the sin/cos features (a 1-Lipschitz map of the state): the global bound holds for the controller,
and a `region` must then be a box of feature values, not of raw states.
"""

from __future__ import annotations

import numpy as np

from lipnet.exceptions import LipnetDimension, LipnetValue
from lipnet.pathlift import as_weights, input_path_matrix

__all__ = ["path_lipschitz_bound"]

_SLOPE_IN_UNIT = ("relu", "tanh")  # elementwise, slopes in [0, 1] a.e.: |Δ_l| ≤ I holds


def _dead_masks(ws, low, high) -> list[np.ndarray]:
    """Per hidden layer: True where interval arithmetic proves the ReLU inactive on the box."""
    lo, hi = low, high
    masks = []
    for w, b in ws[:-1]:
        wp, wn = np.maximum(w, 0), np.minimum(w, 0)
        plo, phi = wp @ lo + wn @ hi + b, wp @ hi + wn @ lo + b
        masks.append(phi <= 0)
        lo, hi = np.maximum(plo, 0), np.maximum(phi, 0)
    return masks


def path_lipschitz_bound(weights, activation: str = "relu", region=None) -> dict:
    """Sound ℓ2→ℓ2 Lipschitz upper bound `‖ |W_D| ⋯ |W_1| ‖₂` from the path-lifting.

    Parameters
    ----------
    weights : `Controller.folded_weights()`: float64 `(W, b)` per layer, raw units.
    activation : `relu` (the path-lifting's setting); `tanh` is also covered (slopes in [0, 1]);
        anything else (e.g. `groupsort`, which mixes coordinates) is reported as not sound.
    region : None (global bound) or `(low, high)` arrays of raw-state bounds (a box); the bound then holds
        on the box and may be smaller (provably inactive ReLUs removed).

    Returns
    -------
    dict with `value` (float), `sound` (bool), `method` ("path-norm"), `region` (str), `notes` (str) and
    the looser members of the chain: `frobenius` = ‖M‖_F, `path_norm_l1` = ‖Φ_in‖₁ (the ℓ∞→ℓ1 constant).
    """
    ws = as_weights(weights)
    n_in = ws[0][0].shape[1]
    region_txt = "global (all inputs)"
    if activation not in _SLOPE_IN_UNIT:
        m = input_path_matrix(ws)
        return {"value": float(np.linalg.norm(m, 2)), "sound": False, "method": "path-norm",
                "region": region_txt, "frobenius": float(np.linalg.norm(m)), "path_norm_l1": float(m.sum()),
                "notes": f"activation {activation!r} is not an elementwise slope-[0,1] nonlinearity (GroupSort "
                         "permutes coordinates), so |J| ≤ |W_D|⋯|W_1| does not hold: value is not a bound"}
    masks = None
    if region is not None:
        try:
            low, high = (np.broadcast_to(np.asarray(v, dtype=np.float64), (n_in,)) for v in region)
        except (TypeError, ValueError):
            raise LipnetDimension(f"region must be (low, high) with {n_in} entries each") from None
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(low <= high)):
            raise LipnetValue("region needs finite bounds with low ≤ high")
        region_txt = f"box low={np.round(low, 6).tolist()} high={np.round(high, 6).tolist()} (raw units)"
        if activation == "relu":
            masks = _dead_masks(ws, low, high)
    if masks is not None:
        ws = [(w * ~masks[k][:, None] if k < len(masks) else w, b) for k, (w, b) in enumerate(ws)]
    m = input_path_matrix(ws)
    value = float(np.linalg.norm(m, 2))
    notes = ("‖f(x)−f(x')‖₂ ≤ ‖M‖₂‖x−x'‖₂ with M = |W_D|⋯|W_1| (|J(x)| ≤ M entrywise); "
             f"looser: ‖M‖_F = {np.linalg.norm(m):.6g}, ‖Φ_in‖₁ = {m.sum():.6g} (ℓ∞→ℓ1 path-norm constant, "
             "≥ the ℓ2 one since ‖·‖_∞ ≤ ‖·‖₂ ≤ ‖·‖₁); rescaling-invariant; saturation is 1-Lipschitz")
    if masks is not None:
        dead = int(sum(mk.sum() for mk in masks))
        notes += f"; {dead} ReLU(s) proven inactive on the box by interval arithmetic and removed"
    if activation == "tanh":
        notes += "; tanh: slopes in [0,1] so the same entrywise bound holds (no rescaling invariance)"
    return {"value": value, "sound": bool(np.isfinite(value)), "method": "path-norm", "region": region_txt,
            "frobenius": float(np.linalg.norm(m)), "path_norm_l1": float(m.sum()), "notes": notes}
