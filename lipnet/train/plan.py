"""Build the controller for a plant: state/action scalings, Lipschitz budget and per-layer gains.

The rule (paper 000: initialise, then normalise the data by the ℓ2–ℓ2 gain of the initialised network):

1. State scaling `s`: the per-state half-width (or std) of the plant's training initial states, so that
   the scaled states `z = (x − x_eq)/s` are O(1) in every coordinate.
2. Action scaling `a`: the half-range of each actuator when it has two-sided limits, otherwise the rms
   LQR action over the training states; the network's output is in units of `a`.
3. Lipschitz budget: the controller's raw bound is `max(a) · Π g_l / min(s)`; a requested bound `L` fixes
   `Γ = Π g_l = L · min(s)/max(a)`. With no request, `L = factor · max(a) ‖diag(1/a) K diag(s)‖₂ / min(s)`:
   `factor` times what the network must at least afford to represent the LQR gain `K` in the scaled
   coordinates (a ReLU/tanh network needs a few times more Frobenius budget than ‖K‖ to do so).
4. Data normalisation by the initialised network's gain: with unit gains, the ℓ2–ℓ2 gain `r_l` that
   layer `l` realises on the training data (median of ‖W_l h‖/‖h‖ over the data propagated through the
   initialised network) is measured; the gains are then `g_l = Γ^{1/D} (Π r)^{1/D} / r_l`, so that every
   layer of the initialised network realises the same gain on the data and Π g_l = Γ exactly. For a positively
   homogeneous network the product alone fixes the function; the split sets the pre-activation scales (what
   tanh and the optimisers' per-layer steps see).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from lipnet.nn import Controller

__all__ = ["ControllerPlan", "plan_controller", "build_controller", "lqr_admitting_factor"]


@dataclass
class ControllerPlan:
    """The resolved scalings and bound for a plant (recorded in the run's summary)."""

    state_scale: np.ndarray
    action_scale: np.ndarray
    lipschitz: float
    lipschitz_source: str  # "requested" or "auto: ..."
    lqr_gain_norm: float
    budget: float  # Γ = Π g_l


def lqr_admitting_factor(rank: int, depth: int) -> float:
    """The budget, in units of ‖K̂‖₂, that provably lets `depth` Frobenius layers realise a rank-`rank` gain K̂ as
    the network's Jacobian at the equilibrium: `rank^(depth/2)` (`tests/test_budget.py` builds those weights)."""
    return float(max(rank, 1)) ** (depth / 2.0)


def plan_controller(plant, lqr, lipschitz: float = 0.0, factor: float = 4.0,
                    generator: torch.Generator | None = None, depth: int = 3) -> ControllerPlan:
    """Choose the scalings and the Lipschitz bound for `plant` (rules 1–3 of the module docstring).

    The automatic bound is at least `lqr_admitting_factor(rank K, depth)` × the scaled LQR gain, so a network of
    `depth` layers within it can represent the LQR gain exactly (with the equilibrium anchor, the LQR's
    linearisation is reachable, not only approached).
    """
    s = np.abs(np.asarray(plant.init_train.scale, dtype=float)).reshape(plant.n_x)
    s = np.maximum(s, 1e-3 * max(s.max(), 1e-12))
    K = np.asarray(lqr.K, dtype=float).reshape(plant.n_u, plant.n_x)
    lo = plant.u_low if plant.u_low is not None else np.full(plant.n_u, -np.inf)
    hi = plant.u_high if plant.u_high is not None else np.full(plant.n_u, np.inf)
    x0 = plant.sample_initial(2048, "train", generator=generator, dtype=torch.float64).numpy() - plant.x_eq
    rms_lqr = np.sqrt(np.mean((x0 @ K.T) ** 2, axis=0))
    a = np.where(np.isfinite(lo) & np.isfinite(hi), (hi - lo) / 2, rms_lqr)
    a = np.maximum(a, 1e-6 * max(a.max(), 1e-12))
    k_scaled = float(np.linalg.norm((K * s[None, :]) / a[:, None], 2))
    lqr_norm = float(np.linalg.norm(K, 2))
    if lipschitz and lipschitz > 0:
        L, source = float(lipschitz), "requested"
        need = a.max() * k_scaled / s.min()
        if L < need:
            warnings.warn(f"the requested Lipschitz bound {L:.4g} is below the {need:.4g} a network needs to "
                          f"represent the LQR gain of the linearised plant (‖K‖₂ = {lqr_norm:.4g}); training may "
                          "not stabilise the plant", stacklevel=2)
    else:
        rank = int(np.linalg.matrix_rank((K * s[None, :]) / a[:, None]))
        factor = max(float(factor), lqr_admitting_factor(rank, depth))
        L = factor * a.max() * max(k_scaled, 1e-6) / s.min()
        source = f"auto: {factor:g} × the LQR gain in scaled coordinates (‖K‖₂ = {lqr_norm:.4g})"
    return ControllerPlan(state_scale=s, action_scale=a, lipschitz=L, lipschitz_source=source,
                          lqr_gain_norm=lqr_norm, budget=L * s.min() / a.max())


@torch.no_grad()
def _layer_gains_on_data(controller: Controller, z: torch.Tensor) -> list[float]:
    gains, h = [], z
    for i, lin in enumerate(controller.layers):
        pre = h @ lin.weight.T
        ratio = pre.norm(dim=-1) / h.norm(dim=-1).clamp_min(1e-12)
        gains.append(float(ratio.median().clamp_min(1e-6)))
        h = pre + (lin.bias if lin.bias is not None else 0)
        if i < len(controller.layers) - 1:
            h = controller.act(h)
    return gains


def build_controller(plant, plan: ControllerPlan, hidden, activation: str = "tanh", layer: str = "frobenius",
                     saturation: str = "tanh", generator: torch.Generator | None = None) -> Controller:
    """Initialise the controller and set its gains by the data-normalisation rule (rule 4)."""
    depth = len(hidden) + 1
    limits = plant.u_low is not None or plant.u_high is not None
    lo = np.full(plant.n_u, -np.inf) if plant.u_low is None else np.asarray(plant.u_low, float)
    hi = np.full(plant.n_u, np.inf) if plant.u_high is None else np.asarray(plant.u_high, float)
    # Anchored at the equilibrium (u(x_eq) = u_eq exactly) whenever u_eq lies strictly inside the limits.
    centered = bool(((lo < plant.u_eq) & (plant.u_eq < hi)).all())
    common = dict(n_x=plant.n_x, n_u=plant.n_u, hidden=tuple(hidden), activation=activation, layer=layer,
                  state_offset=plant.x_eq, state_scale=plan.state_scale, action_offset=plant.u_eq,
                  action_scale=plan.action_scale, u_low=plant.u_low if limits else None,
                  u_high=plant.u_high if limits else None, saturation=saturation,
                  periodic=tuple(getattr(plant, "periodic", ())), centered=centered)
    probe = Controller(gains=1.0, **common)
    if layer == "plain":
        # Plain weights keep AGD's published initialisation (orthogonal × sqrt(out/in)); no bound by construction.
        return probe
    z = probe.features(plant.sample_initial(1024, "train", generator=generator, dtype=torch.float32))
    r = _layer_gains_on_data(probe, z)
    mean_log_r = sum(math.log(v) for v in r) / depth
    gains = [math.exp(math.log(plan.budget) / depth + mean_log_r - math.log(v)) for v in r]
    controller = Controller(gains=gains, **common)
    controller.load_state_dict(probe.state_dict() | {f"layers.{i}.gain": torch.tensor(g)
                                                     for i, g in enumerate(gains)})
    return controller
