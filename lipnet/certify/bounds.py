"""Upper bounds on the controller's ℓ2 Lipschitz constant (raw state → saturated action), one record per method.

The saturation is 1-Lipschitz per channel, so a bound on the folded MLP `W_D σ(⋯σ(W_1 x + b_1)⋯) + b_D` is a bound
on the controller. Biases never enter a Lipschitz bound.

With periodic states the MLP's input is the feature vector f(x) (sin/cos of the angles, `network.input_features`),
and every bound here (spectral, ECLipsE, LipSDP, path-norm) is computed on the MLP from f. f is 1-Lipschitz, so
each stays a sound bound from raw state to action; the construction bound already includes the feature map.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from lipnet._threads import single_thread
from lipnet.exceptions import LipnetArgument
from lipnet.pathlift.norms import path_lipschitz_bound

from .lipsdp_cvxpy import solve_lipsdp_neuron
from .lipsdp_schur import eclipse_fast_multipliers, lipsdp_schur
from .lmi import LipschitzLMI, certify_multipliers, lmi_of_mlp
from .network import MLP, activation_slope, mlp_of

__all__ = ["BoundRecord", "METHODS", "DEFAULT_METHODS", "upper_bound", "upper_bounds", "spectral_bound"]

_U = np.finfo(np.float64).eps


@dataclass
class BoundRecord:
    """One upper bound: `sound` is True only when every step that produced `value` is proven."""

    method: str
    value: float | None
    seconds: float
    sound: bool
    notes: str = ""
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["details"] = {k: v for k, v in self.details.items() if isinstance(v, (int, float, str, bool, type(None)))}
        return d


def spectral_bound(weights: list[np.ndarray]) -> float:
    """Π ‖W_k‖₂ by SVD in float64, each factor inflated by its rounding error bound (a sound upper bound).

    The one spectral-product bound: certification's `spectral` method and the bound export computes on the weights
    read back from a file (float32 or float16 weights are exact in float64).
    """
    value = 1.0
    for w in weights:
        w = np.asarray(w, dtype=np.float64)
        sigma = float(np.linalg.svd(w, compute_uv=False)[0]) if w.size else 0.0
        # LAPACK's SVD is backward stable: |σ̂ − σ| ≤ c·max(m, n)·u·‖W‖₂; take c = 10.
        value *= sigma * (1 + 10 * max(w.shape) * _U)
    return value


def _slope_lmi(net: MLP) -> tuple[LipschitzLMI | None, str]:
    slope = activation_slope(net.activation)
    if slope is None:
        return None, f"not applicable: activation {net.activation!r} is not elementwise slope-restricted"
    if slope[0] != 0.0:
        return None, f"not applicable: slope interval {slope} (only [0, β] is implemented)"
    return lmi_of_mlp(net.weights, slope), ""


def _construction(net, controller, **_):
    if controller is None or not hasattr(controller, "lipschitz_bound"):
        return None, False, "not applicable: needs a lipnet Controller (a bare MLP has no construction bound)", {}
    return float(controller.lipschitz_bound()), True, (
        "by construction: max(action_scale)·Π gain_l/min(state_scale) from the normalised layers"), {}


def _spectral(net, controller, **_):
    return spectral_bound(net.weights), True, "product of exact spectral norms (float64 SVD, rounding-inflated)", {}


def _eclipse_fast(net, controller, **_):
    lmi, why = _slope_lmi(net)
    if lmi is None:
        return None, False, why, {}
    with single_thread():
        rho, t = eclipse_fast_multipliers(lmi)
        rho_v, tau = certify_multipliers(lmi, t, rho)
    if rho_v is None:
        return float(np.sqrt(rho)), False, "ECLipsE-Fast (closed form); LMI not verified in float64: estimate", {}
    return float(np.sqrt(rho_v)) * (1 + 1e-12), True, (
        f"ECLipsE-Fast closed-form multipliers (Xu & Sivaranjani 2024); LMI verified, ρ inflated {tau:.0e}"), {}


def _lipsdp_neuron(net, controller, solver="SCS", sdp_max_neurons=None, **_):
    lmi, why = _slope_lmi(net)
    if lmi is None:
        return None, False, why, {}
    n = sum(lmi.widths)
    if sdp_max_neurons is not None and n > sdp_max_neurons:
        return None, False, f"skipped: {n} hidden neurons > sdp limit {sdp_max_neurons}", {"skipped": True}
    with single_thread():
        res = solve_lipsdp_neuron(lmi, solver=solver)
    if res["value"] is None:
        raw = res["raw"]
        return raw, False, (f"LipSDP-neuron via cvxpy/{solver}: status {res['status']}; not verified "
                            "(value is the solver's estimate)"), {"status": res["status"]}
    return res["value"], True, (
        f"LipSDP-neuron (Fazlyab et al. 2019) via cvxpy/{solver}, status {res['status']}; solver value "
        f"{res['raw']:.6g}; LMI re-verified in float64 ({res['verified_by']}, inflation {res['inflation']:.0e})"), {
        "raw": res["raw"], "solver": solver, "status": res["status"]}


def _lipsdp_schur(net, controller, **_):
    lmi, why = _slope_lmi(net)
    if lmi is None:
        return None, False, why, {}
    res = lipsdp_schur(lmi)
    if res["value"] is None:
        return (float(np.sqrt(res["rho"])) if np.isfinite(res["rho"]) else None), False, (
            "LipSDP-neuron LMI by structured interior point: final LMI not verified; estimate"), {}
    return res["value"], True, (
        f"ours: LipSDP-neuron LMI solved by smoothed descent ({res['evals']} evaluations) and a structure-exploiting "
        f"barrier method ({res['iters']} Newton steps) from ECLipsE-Fast's point ({res['start_value']:.6g}); exact "
        f"ρ(t) by Schur recursion, LMI verified in float64 (inflation {res['inflation']:.0e})"), {
        "newton_steps": res["iters"], "descent_evaluations": res["evals"]}


def _path_norm(net, controller, **_):
    pairs = [(w, b) for w, b in zip(net.weights, net.biases, strict=True)]
    # Global form only: a box-restricted path bound is a local constant and must not compete with global bounds.
    out = path_lipschitz_bound(pairs, activation=net.activation, region=None)
    value = out.get("value")
    notes = out.get("notes", "") or "path-metrics bound (Gonon et al.)"
    if out.get("region") is not None:
        notes += f"; region {out['region']}"
    return (None if value is None else float(value)), bool(out.get("sound", False)), notes, {}


METHODS = {
    "construction": _construction,
    "spectral": _spectral,
    "eclipse-fast": _eclipse_fast,
    "lipsdp-schur": _lipsdp_schur,
    "lipsdp-neuron": _lipsdp_neuron,
    "path-norm": _path_norm,
}
# LipSDP-neuron through cvxpy takes minutes on a 64×64 network and gives the value lipsdp-schur gives in under a
# second (benchmarks/certify.py), so it is opt-in: `--method lipsdp-neuron` or `--method all`.
DEFAULT_METHODS = ("construction", "spectral", "eclipse-fast", "lipsdp-schur", "path-norm")


def upper_bound(method: str, controller_or_mlp, **options) -> BoundRecord:
    """One bound by name (see `METHODS`), timed; options: `solver`, `sdp_max_neurons`."""
    if method not in METHODS:
        raise LipnetArgument(f"unknown bound method {method!r}; valid: {', '.join(METHODS)}")
    net = mlp_of(controller_or_mlp)
    controller = None if isinstance(controller_or_mlp, MLP) else controller_or_mlp
    t0 = time.perf_counter()
    value, sound, notes, details = METHODS[method](net, controller, **options)
    seconds = time.perf_counter() - t0
    if value is not None and not np.isfinite(value):
        value, sound = None, False
    return BoundRecord(method, value, seconds, bool(sound and value is not None), notes, details)


def upper_bounds(controller_or_mlp, methods=None, **options) -> list[BoundRecord]:
    """Every requested bound (default `DEFAULT_METHODS`), in order."""
    methods = DEFAULT_METHODS if methods is None else tuple(methods)
    return [upper_bound(m, controller_or_mlp, **options) for m in methods]
