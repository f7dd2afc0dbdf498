"""Path-conditioned rescaling of ReLU controllers (Lebeurrier, Vayer, Gribonval 2026, paper 002).

A hidden ReLU neuron h may have its incoming weights and bias multiplied by `λ_h = e^{z_h/2}` and its
outgoing weights by `1/λ_h` without changing the function. In log form `θ' = θ ⊙ e^{−Bz/2}` with
`B[i, h] = −1` on h's incoming parameters, `+1` on its outgoing ones; the path-magnitude diagonal
`g = diag(∂Φᵀ∂Φ)` (see `lipnet.pathlift`) then becomes `g ⊙ e^{Bz}`. The rescaling chosen is the one
that aligns `diag(G')` with a reference `D` (identity by default) at the best global scale α, in the
LogDet (Burg) divergence:

    F(z) = min_α  tr(G'(αD)⁻¹) − log det(G'(αD)⁻¹) − p  =  p·log(Σ h'_i / p) − Σ log h'_i,   h' = g' / d

(p = number of parameters with `g_i > 0`). F ≥ 0, F = 0 iff all `h'_i` are equal; it is convex in z.
It is minimised by exact coordinate minimisation (Gauss–Seidel sweeps over neurons): for neuron h with
`x = e^{z_h}`, `∂F/∂z_h = 0` is the quadratic `B_h(p + A_h) x² + D_h A_h x + C_h(A_h − p) = 0`, where
`C_h`, `B_h` are the leave-one-out sums of h' over h's incoming and outgoing parameters, `D_h` the sum
over the others and `A_h` = #incoming − #outgoing; it has exactly one positive root. A sweep is O(p).
Stopping rule: Σ_h |Δz_h| over a sweep below `tol` (the authors' rule), or `max_sweeps`.

How it composes with the layer kinds (the function is preserved exactly in every case):

* `plain`: the weights are multiplied row/column-wise; nothing else changes.
* `frobenius` (`W = g·V/‖V‖_F`): the rescaled `W'` is re-expressed as `V' = W'/‖W'‖_F`, `g' = ‖W'‖_F`.
  Per-neuron rescaling changes the per-layer gains, hence the construction bound `Π g_l` (the function
  and its true Lipschitz constant do not change). With `preserve_bound` (the default for normalised
  layers, whose gains are the Lipschitz budget training relies on) the optimal log-scales z* are
  pulled back to `z_a + t(z* − z_a)` with the largest `t ∈ [0, 1]` such that `Π g'_l ≤ Π g_l`, where the
  anchor z_a is the best *layer-wise* rescaling (one scale per hidden layer: the per-layer factors
  telescope, so Π g is unchanged for every layer kind). The constraint is convex in z for Frobenius
  norms (a sum of log-sum-exps), so t is found by bisection, and `F ≤ F(z_a)` by convexity: the
  criterion improves at least as much as the layer-wise rescaling, the budget is never exceeded.
* `spectral` (`W = g·V/σ_max(V)`): same with `V' = W'`, `g' = σ_max(W')`, and the same bisection (the
  constraint is checked at the returned point, so the budget holds even where it is not convex). At an
  orthogonal initialisation any per-neuron rescaling raises Π σ_max, and the budgeted result is the
  layer-wise one.
* `orthogonal` (`W = g·Y`, `Y` on Stiefel): a per-neuron rescaling destroys orthogonality, so the
  neurons of a hidden layer share one scale (`granularity="layer"`); then `W'_l = (λ_l/λ_{l−1}) W_l`,
  only the gains change, and `Π g_l` is unchanged exactly (the factors telescope).

The controller's input/output scalings and the output biases are never rescaled (inputs and outputs
are not neurons). After a rescaling in the middle of training the optimiser's state (Adam moments,
momentum) refers to the old coordinates: rebuild the optimiser, as the authors do. Optimisers whose
step is tied to a nominal layer norm (AGD's `s_l = g·sqrt(out/in)`) take different *relative* steps on
rescaled layers: on the toy closed loop of `benchmarks/rescale_train.py` AGD diverged after the
rescaling on the unstable plant in 2 of 3 seeds (it did not without it), so do not combine them blindly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from lipnet.exceptions import LipnetArgument, LipnetDimension, LipnetValue
from lipnet.pathlift import as_weights, layer_weights, path_magnitude_diag

__all__ = ["rescale", "RescaleResult", "rescaling_criterion", "solve_rescaling", "rescale_weights",
           "fisher_diag", "REFERENCES", "KERNELS"]

REFERENCES = ("identity",)
KERNELS = ("path", "fisher")


@dataclass
class RescaleResult:
    """What `rescale` did: sweeps run, criterion per sweep, convergence, and the per-neuron scales."""

    iterations: int
    criterion_history: list[float]
    converged: bool
    scales: list[np.ndarray]  # per hidden layer: λ_h multiplying neuron h's incoming weights and bias
    criterion_before: float = float("nan")
    criterion_after: float = float("nan")
    damping: float = 1.0  # t in z_a + t(z* − z_a): < 1 where preserve_bound shrank the optimal log-scales
    anchor: str = "zero"  # z_a: "zero" (no rescaling) or "layer" (the budget-neutral layer-wise optimum)
    bound_before: float = float("nan")  # construction bound Π Lip(W_l) of the network (scaled units)
    bound_after: float = float("nan")
    gains_before: list[float] = field(default_factory=list)
    gains_after: list[float] = field(default_factory=list)
    granularity: str = "neuron"

    def summary(self) -> str:
        """One line for logs."""
        return (f"path rescaling: F {self.criterion_before:.4g} → {self.criterion_after:.4g} in {self.iterations} "
                f"sweeps ({'converged' if self.converged else 'NOT converged'}), damping {self.damping:.3g}, "
                f"construction bound {self.bound_before:.4g} → {self.bound_after:.4g}")


# --- the criterion and its solver, on plain arrays -------------------------------------------------------

def _flat(parts) -> np.ndarray:
    return np.concatenate([np.concatenate([gw.ravel(), gb.ravel()]) for gw, gb in parts])


def _bz(shapes, z: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """`Bz` per parameter: −z_out(row) + z_in(col) for W_l, −z_out for b_l (z = 0 at inputs/outputs)."""
    depth = len(shapes)
    zs = [np.zeros(shapes[0][1])] + [np.asarray(v, dtype=np.float64) for v in z] + [np.zeros(shapes[-1][0])]
    if len(zs) != depth + 1:
        raise LipnetDimension(f"{len(z)} log-scale vectors given for {depth - 1} hidden layers")
    return [(-zs[l + 1][:, None] + zs[l][None, :], -zs[l + 1]) for l in range(depth)]


def rescaling_criterion(g, z: Sequence[np.ndarray] | None = None) -> float:
    """LogDet divergence `F(z) = p·log(mean h') − Σ log h'` of `h' = h ⊙ e^{Bz}` from the best multiple of I.

    `g` is the per-layer `(gW, gb)` list (already divided by the reference); `z` the per-hidden-layer
    log-scales (None: zero). Entries with `g = 0` carry no path and are left out.
    """
    shapes = [gw.shape for gw, _ in g]
    h = _flat(g)
    bz = _flat(_bz(shapes, z if z is not None else [np.zeros(s[0]) for s in shapes[:-1]]))
    keep = h > 0
    logs = np.log(h[keep]) + bz[keep]
    p = logs.size
    top = logs.max()
    return float(p * (top + np.log(np.exp(logs - top).sum() / p)) - logs.sum())


def _positive_root(a: float, b: float, c: float) -> float:
    """The positive root of `a x² + b x + c` with a > 0 > c (no cancellation)."""
    s = np.sqrt(b * b - 4.0 * a * c)
    return (-b + s) / (2.0 * a) if b < 0 else (2.0 * c) / (-b - s)


def _best_shift(gz, counts, l: int, rows: slice, total: float, p: float) -> tuple[float, float, float] | None:
    """Exact minimiser δ of F when neurons `rows` of hidden layer l all move by δ (None: F ignores them).

    With y = e^δ their incoming entries scale by 1/y and outgoing by y:
    F(δ) = p·log(C_in/y + C_out·y + D) + A·δ + const, A = #in − #out, whose stationarity is the quadratic
    `C_out(p + A) y² + D·A·y + C_in(A − p) = 0` (one positive root since p > |A|).
    """
    s_in = gz[l][0][rows].sum() + gz[l][1][rows].sum()
    s_out = gz[l + 1][0][:, rows].sum()
    c_in, c_out = s_in / total, s_out / total  # divided by the total: scale-free
    rest = max(1.0 - c_in - c_out, 0.0)
    a_h = float(counts[l][rows].sum())
    qa, qb, qc = c_out * (p + a_h), rest * a_h, c_in * (a_h - p)
    if not (qa > 0 and qc < 0):
        return None  # no live incoming or outgoing entry: F does not depend on these scales
    delta = float(np.log(_positive_root(qa, qb, qc)))
    return (delta, s_in, s_out) if delta != 0.0 else None


def solve_rescaling(g, granularity: Sequence[str] | str = "neuron", tol: float = 1e-2,
                    max_sweeps: int = 100) -> tuple[list[np.ndarray], list[float], int, bool]:
    """Minimise the criterion over the hidden log-scales by exact coordinate sweeps.

    Parameters
    ----------
    g : per-layer `(gW, gb)` (path-magnitude diagonal divided by the reference diagonal).
    granularity : `neuron` (one scale per neuron) or `layer` (one per hidden layer), or one per hidden layer.
    tol : stop when Σ|Δz| over a sweep is below tol.
    max_sweeps : at most this many sweeps.

    Returns
    -------
    z (per hidden layer), criterion history (initial, then after each sweep), sweeps run, converged.
    """
    gz = [(np.array(gw, dtype=np.float64), np.array(gb, dtype=np.float64)) for gw, gb in g]
    depth = len(gz)
    gran = [granularity] * (depth - 1) if isinstance(granularity, str) else list(granularity)
    if len(gran) != depth - 1 or any(x not in ("neuron", "layer") for x in gran):
        raise LipnetValue(f"granularity must be 'neuron'/'layer' (or one per hidden layer), got {granularity!r}")
    if any((gw < 0).any() or (gb < 0).any() or not np.isfinite(gw).all() for gw, gb in gz):
        raise LipnetValue("the path-magnitude diagonal must be finite and non-negative")
    masks = [(gw > 0, gb > 0) for gw, gb in gz]
    p = float(sum(mw.sum() + mb.sum() for mw, mb in masks))
    # A_h = #live incoming − #live outgoing entries, per hidden neuron
    counts = [masks[l][0].sum(1) + masks[l][1] - masks[l + 1][0].sum(0) for l in range(depth - 1)]
    z = [np.zeros(gw.shape[0]) for gw, _ in gz[:-1]]
    history = [rescaling_criterion(g, z)]
    converged = False
    sweeps = 0
    for sweeps in range(1, max_sweeps + 1):  # noqa: B007 (the count is returned)
        total = sum(gw.sum() + gb.sum() for gw, gb in gz)  # re-summed each sweep: no drift
        moved = 0.0
        # A sweep: every neuron once (exact coordinate minimisation), then every hidden layer as a block
        # (all its log-scales shifted by one exactly-optimal amount). The block moves cost O(p) per sweep,
        # keep F monotone, and remove the slow collective mode of pure neuron sweeps on uneven widths.
        passes = [("neuron", l) for l in range(depth - 1) if gran[l] == "neuron"] + \
            [("layer", l) for l in range(depth - 1)]
        for kind, l in passes:
            n = gz[l][0].shape[0]
            for rows in ([slice(i, i + 1) for i in range(n)] if kind == "neuron" else [slice(0, n)]):
                found = _best_shift(gz, counts, l, rows, total, p)
                if found is None:
                    continue
                delta, c_in, c_out = found
                gz[l][0][rows] *= np.exp(-delta)
                gz[l][1][rows] *= np.exp(-delta)
                gz[l + 1][0][:, rows] *= np.exp(delta)
                total += c_in * np.expm1(-delta) + c_out * np.expm1(delta)
                z[l][rows] += delta
                moved += abs(delta) * (rows.stop - rows.start)
        history.append(rescaling_criterion(g, z))
        if moved < tol:
            converged = True
            break
    return z, history, sweeps, converged


def rescale_weights(weights, z: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """The rescaled `(W, b)` list: `θ' = θ ⊙ e^{−Bz/2}` (incoming × e^{z/2}, outgoing × e^{−z/2})."""
    ws = as_weights(weights)
    bz = _bz([w.shape for w, _ in ws], z)
    return [(w * np.exp(-0.5 * bw), b * np.exp(-0.5 * bb)) for (w, b), (bw, bb) in zip(ws, bz, strict=True)]


def fisher_diag(weights, inputs) -> list[tuple[np.ndarray, np.ndarray]]:
    """Empirical `diag(Σ_x J(x)ᵀJ(x))` of the ReLU network w.r.t. `(W, b)` over the rows of `inputs`.

    The data-dependent kernel of the authors' 'fisher' variant; it transforms like g (`⊙ e^{Bz}`).
    """
    ws = as_weights(weights)
    x = np.asarray(inputs, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != ws[0][0].shape[1]:
        raise LipnetDimension(f"inputs must be (batch, {ws[0][0].shape[1]}), got shape {x.shape}")
    acts, slopes = [x], []
    for k, (w, b) in enumerate(ws):
        pre = acts[-1] @ w.T + b
        if k < len(ws) - 1:
            slopes.append((pre > 0).astype(np.float64))
            acts.append(np.maximum(pre, 0.0))
    out = [(np.zeros_like(w), np.zeros_like(b)) for w, b in ws]
    for k in range(ws[-1][0].shape[0]):
        delta = np.zeros((x.shape[0], ws[-1][0].shape[0]))
        delta[:, k] = 1.0
        for l in range(len(ws) - 1, -1, -1):
            out[l][0][...] += (delta**2).T @ acts[l] ** 2
            out[l][1][...] += (delta**2).sum(axis=0)
            if l:
                delta = (delta @ ws[l][0]) * slopes[l - 1]
    return out


# --- applying it to a Controller ---------------------------------------------------------------------------

def _kinds(model) -> list[str]:
    from lipnet.nn.layers import LipschitzLinear

    for lin in model.layers:
        if not isinstance(lin, LipschitzLinear):
            raise LipnetArgument(f"cannot rescale a layer of type {type(lin).__name__}: no exact re-expression known")
    return [lin.kind for lin in model.layers]


def _layer_bounds(model, new_weights) -> list[float]:
    """Construction bound of each layer if it held `new_weights` (each layer's `lipschitz_of`)."""
    return [lin.lipschitz_of(w) for lin, (w, _) in zip(model.layers, new_weights, strict=True)]


def _write(model, new_weights) -> None:
    for lin, (w, b) in zip(model.layers, new_weights, strict=True):
        lin.set_weight(w, b)


def _check_tol(tol, max_sweeps):
    if not (isinstance(tol, int | float) and tol > 0):
        raise LipnetValue(f"tol must be a positive number, got {tol!r}")
    if not (isinstance(max_sweeps, int) and max_sweeps >= 1):
        raise LipnetValue(f"max_sweeps must be a positive integer, got {max_sweeps!r}")


def _reference_diag(reference, ws):
    if isinstance(reference, str):
        if reference not in REFERENCES:
            raise LipnetValue(f"unknown reference {reference!r}; valid: {', '.join(REFERENCES)}, "
                             "or a list of positive (dW, db) arrays shaped like the layers")
        return None
    try:
        ref = [(np.asarray(dw, dtype=np.float64), np.asarray(db, dtype=np.float64)) for dw, db in reference]
    except (TypeError, ValueError):
        raise LipnetArgument("reference must be 'identity' or a list of (dW, db) arrays shaped like the layers") \
            from None
    if len(ref) != len(ws) or any(dw.shape != w.shape or db.shape != b.shape
                                  for (dw, db), (w, b) in zip(ref, ws, strict=True)):
        raise LipnetDimension("reference diagonal must have one (dW, db) pair shaped like each layer's (W, b)")
    if any(not ((dw > 0).all() and (db > 0).all()) for dw, db in ref):
        raise LipnetValue("reference diagonal entries must be positive")
    return ref


def _fit_budget(model, ws, g, z, gran, tol, max_sweeps):
    """Shrink the optimal log-scales z* until the construction bound Π Lip(W_l) is not above its value now.

    The anchor z_a is the layer-wise optimum (one scale per hidden layer: the per-layer factors telescope,
    so Π Lip is unchanged for every layer kind) when neuron scales are in play, else 0; the result is
    `z_a + t(z* − z_a)` with the largest t ∈ [0, 1] that fits (bisection; the fit is checked, so the
    budget holds even where the constraint is not convex), and F is at most F(z_a) by convexity of F.
    """
    def bound(zz) -> float:
        return float(np.prod(_layer_bounds(model, rescale_weights(ws, zz))))

    limit = bound([np.zeros_like(v) for v in z]) * (1 + 1e-12)  # same formula as the test: exact at z = 0
    if bound(z) <= limit:
        return z, 1.0, "zero"
    anchor, name = [np.zeros_like(v) for v in z], "zero"
    if "neuron" in gran:
        z_layer = solve_rescaling(g, "layer", tol=tol, max_sweeps=max_sweeps)[0]
        if bound(z_layer) <= limit:
            anchor, name = z_layer, "layer"
    lo, hi = 0.0, 1.0
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if bound([a + mid * (v - a) for a, v in zip(anchor, z, strict=True)]) <= limit \
            else (lo, mid)
    return [a + lo * (v - a) for a, v in zip(anchor, z, strict=True)], lo, name


def rescale(model, reference="identity", tol: float = 1e-2, max_sweeps: int = 100, *, kernel: str = "path",
            states=None, granularity: str = "auto", preserve_bound: bool | None = None,
            reg: float = 0.0) -> RescaleResult:
    """Rescale a ReLU `Controller` in place so that its path kernel aligns with the reference; function unchanged.

    Parameters
    ----------
    model : `lipnet.nn.Controller` with `activation="relu"`, any layer kind.
    reference : `identity` (the paper's choice: align diag G with a multiple of I), or a list of positive
        `(dW, db)` arrays shaped like the layers (align with a multiple of that diagonal).
    tol : convergence tolerance on Σ|Δz| over one sweep (z = log-scales; λ = e^{z/2}).
    max_sweeps : sweep limit; `converged` says whether tol was reached first.
    kernel : `path` (data-free path-magnitude diagonal, the paper's) or `fisher` (diag of Σ JᵀJ over
        `states`, the authors' data-dependent variant).
    states : raw plant states (batch, n_x), needed for `kernel="fisher"`.
    granularity : `neuron`, `layer`, or `auto` (neuron, except layer around orthogonal layers).
    preserve_bound : never raise the construction bound Π Lip(W_l) (shrink the log-scales instead);
        None means True when a layer is `frobenius` or `spectral` (their gains are the Lipschitz budget).
    reg : added to every diagonal entry before the alignment (the authors' `reg`; 0 by default).
    """
    from lipnet.nn import Controller

    if not isinstance(model, Controller):
        raise LipnetArgument(f"rescale expects a lipnet Controller, got {type(model).__name__}")
    if model.activation != "relu":
        raise LipnetArgument(f"the rescaling symmetry needs ReLU (positively homogeneous); this controller uses "
                             f"{model.activation!r}")
    _check_tol(tol, max_sweeps)
    if kernel not in KERNELS:
        raise LipnetValue(f"unknown kernel {kernel!r}; valid: {', '.join(KERNELS)}")
    if not (reg >= 0 and np.isfinite(reg)):
        raise LipnetValue(f"reg must be a finite non-negative number, got {reg!r}")
    kinds = _kinds(model)
    if len(kinds) < 2:
        return RescaleResult(0, [], True, [], granularity="neuron")  # no hidden neuron: nothing to do
    ws = layer_weights(model)
    if kernel == "path":
        g = path_magnitude_diag(ws)
    else:
        if states is None:
            raise LipnetArgument("kernel='fisher' needs states=(batch, n_x) raw plant states")
        x = torch.as_tensor(np.asarray(states, dtype=np.float64))
        if x.ndim != 2 or x.shape[1] != model.n_x:
            raise LipnetDimension(f"states must be (batch, {model.n_x}), got shape {tuple(x.shape)}")
        with torch.no_grad():  # float64 x: the features are computed in float64 (buffers upcast)
            zin = model.features(x)
        g = fisher_diag(ws, zin.numpy())
    if reg:
        g = [(gw + reg, gb + reg) for gw, gb in g]
    # A layer without bias has no bias parameters: they carry no kernel entry (g = 0 is left out of F).
    g = [(gw, gb if lin.bias is not None else np.zeros_like(gb)) for (gw, gb), lin in zip(g, model.layers, strict=True)]
    ref = _reference_diag(reference, ws)
    if ref is not None:
        g = [(gw / dw, gb / db) for (gw, gb), (dw, db) in zip(g, ref, strict=True)]

    if granularity == "auto":
        gran = ["layer" if "orthogonal" in (kinds[l], kinds[l + 1]) else "neuron" for l in range(len(kinds) - 1)]
    elif granularity in ("neuron", "layer"):
        gran = [granularity] * (len(kinds) - 1)
        if granularity == "neuron" and "orthogonal" in kinds:
            raise LipnetArgument("per-neuron rescaling breaks orthogonal layers; use granularity='layer' or 'auto'")
    else:
        raise LipnetValue(f"granularity must be 'auto', 'neuron' or 'layer', got {granularity!r}")
    if preserve_bound is None:
        preserve_bound = any(k in ("frobenius", "spectral") for k in kinds)

    z, history, sweeps, converged = solve_rescaling(g, gran, tol=tol, max_sweeps=max_sweeps)
    bounds_before = [lin.lipschitz() for lin in model.layers]
    bound_before = float(np.prod(bounds_before))
    t, anchor = 1.0, "zero"
    if preserve_bound:
        z, t, anchor = _fit_budget(model, ws, g, z, gran, tol, max_sweeps)
    new = rescale_weights(ws, z)
    _write(model, new)
    return RescaleResult(
        iterations=sweeps, criterion_history=history, converged=converged,
        scales=[np.exp(0.5 * v) for v in z], criterion_before=history[0],
        criterion_after=rescaling_criterion(g, z), damping=t, anchor=anchor,
        bound_before=bound_before, bound_after=model.network_lipschitz_bound(),
        gains_before=bounds_before, gains_after=[lin.lipschitz() for lin in model.layers], granularity=(
            gran[0] if len(set(gran)) == 1 else "mixed"))
