"""Path-lifting of ReLU MLPs with biases: path-norms, the path-magnitude diagonal, brute-force enumeration.

For `f(x) = W_D σ(⋯ σ(W_1 x + b_1) ⋯) + b_D` the path-lifting `Φ(θ)` has one coordinate per path that
starts at an input coordinate or at a bias and ends at an output; its value is the product of the
parameters met on the way (a bias is the first factor of the paths that start at it; an output bias
is a path of length 0). `Φ` is invariant under the ReLU rescaling symmetry (neuron h's incoming weights
and bias × λ, outgoing weights × 1/λ). References: Gonon, Brisebarre, Riccietti, Gribonval (path-norm
toolkit, path-metrics) and Lebeurrier, Vayer, Gribonval 2026 (path-conditioned training).

This package is path-lifting's one home: `norms.py` (the path-norm Lipschitz bound `certify` reports) and
`rescale.py` (the rescaling that conditions training) build on what this module defines.

Everything here works on a list of float64 `(W, b)` pairs (W of shape out × in) and uses one forward
(and, for `g`, one backward) pass on modified weights; `enumerate_paths` is the brute-force check.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

from lipnet.exceptions import LipnetArgument, LipnetDimension, LipnetValue

__all__ = ["as_weights", "layer_weights", "path_norm", "path_magnitude_diag", "input_path_matrix",
           "enumerate_paths", "brute_force_path_norm", "brute_force_path_magnitude_diag"]

Weights = list[tuple[np.ndarray, np.ndarray]]


def as_weights(weights) -> Weights:
    """Check and copy a list of `(W, b)` pairs (numpy or torch) into float64 numpy arrays.

    `b` may be None (no bias: treated as zeros, which adds only zero paths).
    """
    if hasattr(weights, "folded_weights") or hasattr(weights, "layers"):
        raise LipnetArgument("pass a list of (W, b) pairs; for a Controller use layer_weights(model) "
                             "or model.folded_weights()")
    out: Weights = []
    prev = None
    for k, pair in enumerate(weights):
        try:
            w, b = pair
        except (TypeError, ValueError):
            raise LipnetArgument(f"layer {k}: expected a (W, b) pair, got {type(pair).__name__}") from None
        w = _np(w)
        if w.ndim != 2:
            raise LipnetDimension(f"layer {k}: W must be a matrix (out × in), got shape {w.shape}")
        b = np.zeros(w.shape[0]) if b is None else _np(b).reshape(-1)
        if b.shape[0] != w.shape[0]:
            raise LipnetDimension(f"layer {k}: bias has {b.shape[0]} entries but W has {w.shape[0]} rows")
        if prev is not None and w.shape[1] != prev:
            raise LipnetDimension(f"layer {k}: W takes {w.shape[1]} inputs but the previous layer gives {prev}")
        if not (np.isfinite(w).all() and np.isfinite(b).all()):
            raise LipnetDimension(f"layer {k}: non-finite weights")
        out.append((w, b))
        prev = w.shape[0]
    if not out:
        raise LipnetDimension("empty network: no (W, b) pairs given")
    return out


def _np(a) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().double().numpy()
    return np.array(a, dtype=np.float64, copy=True)


def layer_weights(model) -> Weights:
    """The effective float64 `(W_l, b_l)` of a `Controller`'s layers, *without* the input/output scalings.

    These are the parameters the rescaling acts on; use `model.folded_weights()` for raw units.
    """
    try:
        layers = list(model.layers)
    except AttributeError:
        raise LipnetArgument(f"expected a lipnet Controller, got {type(model).__name__}") from None
    out = []
    for lin in layers:
        w = lin.weight
        b = lin.bias if lin.bias is not None else None
        out.append((_np(w), None if b is None else _np(b)))
    return as_weights(out)


def path_norm(weights, q: float = 1.0, biases: bool = True) -> float:
    """ℓq norm of the path-lifting, `‖Φ(θ)‖_q`, by one forward pass on `|W|^q`, `|b|^q` with all-ones input.

    Parameters
    ----------
    weights : list of `(W, b)` pairs.
    q : 0 < q < ∞, or `math.inf` (the largest |path value|, by a max-product forward pass).
    biases : include the paths that start at a bias (False: input-to-output paths only).
    """
    ws = as_weights(weights)
    q = float(q)
    if not q > 0:
        raise LipnetValue(f"q must be positive (or inf), got {q}")
    if math.isinf(q):
        v = np.ones(ws[0][0].shape[1])
        for w, b in ws:
            v = (np.abs(w) * v[None, :]).max(axis=1)
            if biases:
                v = np.maximum(v, np.abs(b))
        return float(v.max())
    v = np.ones(ws[0][0].shape[1])
    for w, b in ws:
        v = np.abs(w) ** q @ v
        if biases:
            v = v + np.abs(b) ** q
    return float(v.sum() ** (1.0 / q))


def path_magnitude_diag(weights) -> list[tuple[np.ndarray, np.ndarray]]:
    """Diagonal `g = diag(∂Φᵀ∂Φ)` of the path-magnitude matrix, per parameter, shaped like `(W, b)`.

    `g_i = Σ_{paths ∋ i} Π_{j on the path, j ≠ i} θ_j²`: the gradient of the summed output of the network
    with squared weights and biases, all-ones input, w.r.t. those squared parameters — one forward pass
    (`a`: sums of squared products reaching each neuron) and one backward pass (`c`: from each neuron to
    all outputs), so `g(W_l)[i, j] = c_l[i] · a_{l−1}[j]` and `g(b_l)[i] = c_l[i]`.
    """
    ws = as_weights(weights)
    acts = [np.ones(ws[0][0].shape[1])]
    for w, b in ws:
        acts.append(w**2 @ acts[-1] + b**2)
    back = [np.ones(ws[-1][0].shape[0])]
    for w, _ in reversed(ws[1:]):
        back.append((w**2).T @ back[-1])
    back.reverse()
    return [(np.outer(c, a), c.copy()) for c, a in zip(back, acts[:-1], strict=True)]


def input_path_matrix(weights) -> np.ndarray:
    """`M = |W_D| ⋯ |W_1|`: `M[k, j]` is the ℓ1 norm of the path values from input j to output k.

    Rescaling-invariant; `Σ M = path_norm(weights, 1, biases=False)`.
    """
    ws = as_weights(weights)
    m = np.abs(ws[0][0])
    for w, _ in ws[1:]:
        m = np.abs(w) @ m
    return m


# --- brute force (tiny networks, tests) --------------------------------------------------------------------

def enumerate_paths(weights, max_paths: int = 200_000) -> tuple[np.ndarray, list[tuple]]:
    """Every path of the lifting, explicitly: `(values, paths)`.

    Each path is a tuple of parameter references `("W", l, i, j)` / `("b", l, i)` (l = 0-based layer)
    from its start (an input, or the bias it starts at) to an output; `values[p]` is the product of those
    parameters. Exponential in depth: for checking the efficient routines on tiny nets only.
    """
    ws = as_weights(weights)
    widths = [ws[0][0].shape[1]] + [w.shape[0] for w, _ in ws]
    count = sum(widths[s] * math.prod(widths[s + 1:]) for s in range(len(widths)))
    if count > max_paths:
        raise LipnetDimension(f"{count} paths exceed max_paths={max_paths}; brute force is for tiny nets")
    paths: list[tuple] = []
    depth = len(ws)
    # A path starts at layer s (s = 0: an input coordinate; s ≥ 1: the bias of a neuron of layer s)
    # and visits one neuron in each later layer.
    for s in range(depth + 1):
        for start in range(widths[s]):
            first = () if s == 0 else (("b", s - 1, start),)
            for route in itertools.product(*(range(n) for n in widths[s + 1:])):
                nodes = (start, *route)
                hops = tuple(("W", s + t, nodes[t + 1], nodes[t]) for t in range(len(route)))
                paths.append(first + hops)
    values = np.array([math.prod(_param(ws, ref) for ref in p) for p in paths])
    return values, paths


def _param(ws: Weights, ref: tuple) -> float:
    if ref[0] == "W":
        return float(ws[ref[1]][0][ref[2], ref[3]])
    return float(ws[ref[1]][1][ref[2]])


def brute_force_path_norm(weights, q: float = 1.0, biases: bool = True) -> float:
    """`‖Φ‖_q` from the explicit path enumeration (tests)."""
    values, paths = enumerate_paths(weights)
    if not biases:
        values = np.array([v for v, p in zip(values, paths, strict=True) if not p or p[0][0] == "W"])
    if math.isinf(q):
        return float(np.abs(values).max())
    return float((np.abs(values) ** q).sum() ** (1.0 / q))


def brute_force_path_magnitude_diag(weights: Sequence) -> list[tuple[np.ndarray, np.ndarray]]:
    """`diag(∂Φᵀ∂Φ)` from the explicit paths: `Σ_{p ∋ i} Π_{j ∈ p, j ≠ i} θ_j²` (tests)."""
    ws = as_weights(weights)
    _, paths = enumerate_paths(ws)
    g = [(np.zeros_like(w), np.zeros_like(b)) for w, b in ws]
    for p in paths:
        for k, ref in enumerate(p):
            rest = math.prod(_param(ws, r) ** 2 for t, r in enumerate(p) if t != k)
            if ref[0] == "W":
                g[ref[1]][0][ref[2], ref[3]] += rest
            else:
                g[ref[1]][1][ref[2]] += rest
    return g
