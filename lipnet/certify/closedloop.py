"""Closed-loop certificates: incremental small gain for `x⁺ = A x + B u`, `u = K x + Δ(x)` (Zames; incremental form).

K is any matrix (we take the controller's central-difference Jacobian at the equilibrium: soundness does not
depend on the choice). Lip(Δ) of `Δ(x) = sat(W_D σ(⋯)) − K x` is bounded soundly by LipSDP-neuron's LMI for the
network with the saturation as one more slope-[0,1] layer and a parallel linear branch −K (ours: the structured
barrier method), or by the triangle inequality Lip(π) + ‖K‖₂. With A_cl = A + BK Schur stable and
`γ = ‖(zI − A_cl)⁻¹B‖_∞`, `γ · Lip(Δ) < 1` proves the loop incrementally ℓ2-stable (all trajectories converge to
each other). This is a certificate for a linear plant only; for a nonlinear plant the same numbers describe its
linearisation and are reported as such, never as certified. The tighter option (`iqc.py`): a neuron-wise
incremental quadratic-constraint LMI with a Lyapunov matrix P, which contains the small-gain test as its t = 0 case.

Both LMIs put the first layer's input and the skip branch −K x on the same vector x, i.e. assume the first layer
is linear in the state. With periodic input features (sin/cos of angles) it is not, so neither applies: Lip(Δ) is
then bounded by the triangle inequality alone, Lip(π) + ‖K‖₂ with the smaller of the spectral and LipSDP bounds
of π's network on its features (sound on raw states: the feature map is 1-Lipschitz), and the IQC test is
reported not applicable.
"""

from __future__ import annotations

import numpy as np
import torch

from lipnet.exceptions import LipnetDimension, LipnetValue

from .bounds import spectral_bound
from .empirical import network_forward
from .lipsdp_schur import lipsdp_schur
from .lmi import LipschitzLMI, lmi_of_mlp
from .network import MLP, activation_slope, mlp_of

__all__ = ["controller_gain", "residual_lipschitz", "hinf_norm", "small_gain", "closed_loop_certificate",
           "loop_lmi"]

IQC_MODES = ("fallback", "always", "off")
PERIODIC_NOT_APPLICABLE = "not applicable: periodic input features"


def controller_gain(net: MLP, x_eq: np.ndarray, h: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`(K, π(x_eq))`: central-difference Jacobian of the saturated controller at `x_eq`, and its action there."""
    x_eq = np.asarray(x_eq, dtype=np.float64).reshape(-1)
    n = x_eq.size
    h = 1e-6 * max(1.0, float(np.abs(x_eq).max())) if h is None else h
    pts = np.concatenate([x_eq[None] + h * np.eye(n), x_eq[None] - h * np.eye(n), x_eq[None]])
    with torch.no_grad():
        out = network_forward(net, torch.as_tensor(pts), saturate=True).numpy()
    k = ((out[:n] - out[n:2 * n]) / (2 * h)).T
    return k, out[-1]


def loop_lmi(net: MLP) -> LipschitzLMI | None:
    """The network Δx ↦ Δu as LMI data (β folded, a saturation as one more slope-[0, 1] layer), or None."""
    slope = activation_slope(net.activation)
    if slope is None or slope[0] != 0.0 or net.periodic:  # periodic: the first layer is not linear in x
        return None
    ws = [net.weights[0]] + [slope[1] * w for w in net.weights[1:]]
    if net.saturated:
        return LipschitzLMI(ws, np.eye(net.n_out))
    return LipschitzLMI(ws[:-1], ws[-1])


def _feature_lipschitz(net: MLP) -> float | None:
    """LipSDP-neuron (ours) on π's network from its features, sound for π on raw states; None if not applicable."""
    slope = activation_slope(net.activation)
    if slope is None or slope[0] != 0.0 or len(net.weights) < 2:
        return None
    return lipsdp_schur(lmi_of_mlp(net.weights, slope))["value"]


def residual_lipschitz(net: MLP, K: np.ndarray) -> dict:
    """Sound upper bound on Lip(x ↦ π(x) − K x), the tightest of the applicable methods.

    `all` maps each method to its value; `not_applicable` names the methods left out and why.
    """
    K = np.asarray(K, dtype=np.float64)
    lip_pi = spectral_bound(net.weights)
    norm_k = spectral_bound([K])
    results = {"triangle": lip_pi + norm_k}
    slope = activation_slope(net.activation)
    if net.periodic:
        # The skip branch −K x and the first layer do not share their input (x vs sin/cos features), so the
        # residual LMI does not apply; Lip(π) + ‖K‖ holds with any sound bound of Lip(π).
        lip_sdp = _feature_lipschitz(net)
        if lip_sdp is not None:
            results["triangle-lipsdp"] = lip_sdp + norm_k
        method = min(results, key=results.get)
        return {"value": results[method], "method": method, "all": results,
                "not_applicable": {"lipsdp-schur": PERIODIC_NOT_APPLICABLE}}
    if slope is not None and slope[0] == 0.0:
        beta = slope[1]
        ws = [net.weights[0]] + [beta * w for w in net.weights[1:]]
        if net.saturated:  # saturation = one more slope-[0, 1] layer, then the identity
            lmi = LipschitzLMI(ws, np.eye(net.n_out), -K)
        else:
            lmi = LipschitzLMI(ws[:-1], ws[-1], -K)
        res = lipsdp_schur(lmi)
        if res["value"] is not None:
            results["lipsdp-schur"] = res["value"]
    method = min(results, key=results.get)
    return {"value": results[method], "method": method, "all": results, "not_applicable": {}}


def hinf_norm(A: np.ndarray, B: np.ndarray, dt: float) -> float:
    """‖(zI − A)⁻¹B‖_∞ (state output) via python-control, inflated by its bisection tolerance.

    `control.norm(sys, 'inf', method='scipy')` fails for non-square systems in control 0.10.2, so B (or the
    output) is zero-padded to square first; padding does not change the norm.
    """
    import control

    n, m = B.shape
    size = max(n, m)
    Bp = np.zeros((n, size))
    Bp[:, :m] = B
    C = np.zeros((size, n))
    C[:n, :n] = np.eye(n)
    sys = control.ss(A, Bp, C, np.zeros((size, size)), dt if dt and dt > 0 else True)
    tol = 1e-8
    value = float(control.norm(sys, "inf", tol=tol, method="scipy"))
    return value * (1 + 10 * tol)


def small_gain(A: np.ndarray, B: np.ndarray, K: np.ndarray, lip_delta: float, dt: float = 1.0) -> dict:
    """Incremental small-gain test for `x⁺ = (A + BK) x + B Δ(x)` with Lip(Δ) ≤ `lip_delta`."""
    A, B, K = (np.atleast_2d(np.asarray(v, dtype=np.float64)) for v in (A, B, K))
    n = A.shape[0]
    if A.shape != (n, n) or B.shape[0] != n or K.shape != (B.shape[1], n):
        raise LipnetDimension(f"shapes A {A.shape}, B {B.shape}, K {K.shape} do not fit x⁺ = (A + BK)x")
    a_cl = A + B @ K
    radius = float(np.abs(np.linalg.eigvals(a_cl)).max())
    out = {"A_cl_spectral_radius": radius, "lip_delta": float(lip_delta), "hinf": None, "margin": None,
           "allowed_lip_delta": None, "passes": False}
    # Stability first: ‖·‖_∞ computed by python-control is the L∞ norm and says nothing about stability.
    if not radius < 1 - 1e-9:
        out["reason"] = f"A + BK is not Schur stable (spectral radius {radius:.6g} ≥ 1)"
        return out
    try:
        gamma = hinf_norm(a_cl, B, dt)
    except Exception as exc:  # noqa: BLE001 - any failure of the norm computation means no certificate
        out["reason"] = f"H∞ norm computation failed ({exc.__class__.__name__}: {exc})"
        return out
    product = gamma * float(lip_delta)
    out.update(hinf=gamma, margin=1.0 - product, allowed_lip_delta=1.0 / gamma if gamma > 0 else float("inf"),
               passes=bool(product < 1.0))
    out["reason"] = (f"γ·Lip(Δ) = {gamma:.6g} × {lip_delta:.6g} = {product:.6g} "
                     + ("< 1" if product < 1 else "≥ 1: small gain fails"))
    return out


def closed_loop_certificate(controller_or_mlp, A, B, dt: float, x_eq=None, u_eq=None, linear: bool = True,
                            plant_name: str = "", iqc: str = "fallback", iqc_max_neurons: int = 256,
                            solver: str = "SCS") -> dict:
    """The closed-loop result for a plant linearised as `δx⁺ = A δx + B δu` at `(x_eq, u_eq)`.

    `certified` is True only when the plant is linear (`linear=True`) and either the small-gain test passes
    (A + BK Schur stable, product < 1, sound bounds throughout) or the neuron-wise IQC LMI is verified in float64.
    `iqc`: "fallback" runs the IQC SDP only when small gain fails, "always" runs it too, "off" never; it is
    skipped above `iqc_max_neurons` hidden neurons (plus saturation channels) and for nonlinear plants.
    """
    if iqc not in IQC_MODES:
        raise LipnetValue(f"iqc must be one of {', '.join(IQC_MODES)}, got {iqc!r}")
    net = mlp_of(controller_or_mlp)
    A, B = np.atleast_2d(np.asarray(A, dtype=np.float64)), np.atleast_2d(np.asarray(B, dtype=np.float64))
    if A.shape[0] != net.n_in or B.shape[1] != net.n_out:
        raise LipnetDimension(f"plant has n_x={A.shape[0]}, n_u={B.shape[1]} but the controller maps "
                              f"{net.n_in} → {net.n_out}")
    x_eq = np.zeros(net.n_in) if x_eq is None else np.asarray(x_eq, dtype=np.float64).reshape(-1)
    u_eq = np.zeros(net.n_out) if u_eq is None else np.asarray(u_eq, dtype=np.float64).reshape(-1)
    K, u_at_eq = controller_gain(net, x_eq)
    res = residual_lipschitz(net, K)
    sg = small_gain(A, B, K, res["value"], dt)
    assumptions = [
        "u = π(x) with π the saturated controller in raw units; K = central-difference Jacobian of π at x_eq "
        "(any K is sound), Δ(x) = π(x) − K(x − x_eq) − π(x_eq)",
        f"Lip(Δ) ≤ {res['value']:.6g} by {res['method']} (sound)",
        "small gain ⇒ incremental ℓ2 stability: all closed-loop trajectories converge to one another "
        "(to the closed-loop equilibrium, which is x_eq only if π(x_eq) = u_eq)",
    ]
    if net.periodic:
        assumptions.append(f"periodic states {list(net.periodic)} enter through sin/cos features (1-Lipschitz): "
                           "the residual and IQC LMIs are not applicable (they need a first layer linear in x)")
    iqc_res = None
    lmi = loop_lmi(net)
    if linear and iqc != "off" and (iqc == "always" or not sg["passes"]):
        if net.periodic:
            iqc_res = {"passes": False, "reason": PERIODIC_NOT_APPLICABLE}
        elif lmi is None:
            iqc_res = {"passes": False, "reason": f"not applicable: activation {net.activation!r}"}
        elif sum(lmi.widths) > iqc_max_neurons:
            iqc_res = {"passes": False, "reason": f"skipped: {sum(lmi.widths)} neurons > {iqc_max_neurons}"}
        else:
            from .iqc import iqc_certificate

            iqc_res = iqc_certificate(lmi, A, B, K, res["value"], solver=solver)
            assumptions.append("IQC: every hidden activation and the saturation are elementwise slope-restricted "
                               "in [0, β] (β folded into the next layer); V(Δx) = ΔxᵀPΔx decreases by ε‖Δx‖²")
    if linear:
        certified = bool(sg["passes"]) or bool(iqc_res and iqc_res["passes"])
        if sg["passes"]:
            verdict = "certified (incremental small gain on the linear plant)"
        elif certified:
            verdict = ("certified (neuron-wise incremental IQC on the linear plant; small gain fails: "
                       + sg.get("reason", "") + ")")
        else:
            verdict = "not certified: " + sg.get("reason", "") + (
                f"; IQC: {iqc_res['reason']}" if iqc_res else "")
    else:
        certified = False
        verdict = ("no certificate: the plant is nonlinear; the small-gain test above holds for its "
                   "linearisation at the equilibrium only (a local indication; no region with a proven "
                   "linearisation-error bound was established)")
        assumptions.append("plant nonlinear: A, B are the Jacobians of plant.step at (x_eq, u_eq)")
    return {
        "plant": plant_name, "linear_plant": bool(linear),
        "method": ("neuron-wise incremental IQC" if (linear and not sg["passes"] and iqc_res and iqc_res["passes"])
                   else "incremental small gain"),
        "iqc": None if iqc_res is None else {k: v for k, v in iqc_res.items() if k != "t"},
        "x_eq": x_eq.tolist(), "u_eq": u_eq.tolist(), "controller_at_equilibrium": u_at_eq.tolist(),
        "equilibrium_offset": float(np.linalg.norm(u_at_eq - u_eq)),
        "K": K.tolist(), "lip_delta": res["value"], "lip_delta_method": res["method"],
        "lip_delta_all": res["all"], "lip_delta_not_applicable": res["not_applicable"],
        "periodic": list(net.periodic), **{k: v for k, v in sg.items() if k not in ("lip_delta",)},
        "certified": certified, "verdict": verdict, "assumptions": assumptions,
    }
