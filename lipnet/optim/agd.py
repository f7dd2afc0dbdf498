"""Automatic gradient descent (paper 003, Bernstein et al. 2023; public code jxbz/agd `agd.py`).

As published, for a bias-free MLP with L weight matrices W_l ∈ R^{out×in}:

    s_l = sqrt(out_l / in_l)                                  ("singular value" scale; also the init:
                                                              orthogonal W_l times s_l — PlainLinear does this)
    G   = (1/L) Σ_l s_l ‖∇_l‖_F                               (gradient summary)
    η   = log( (1 + sqrt(1 + 4G)) / 2 )                       (minimiser of the majoriser −ηG + ½(e^η − 1)²)
    W_l ← W_l − gain · (η/L) · s_l · ∇_l / ‖∇_l‖_F            (per-layer normalised update, gain = 1)

No learning rate. This module adds two documented adaptations:

(a) **Biases** (the reference raises on them). A bias is an extra column of its layer's weight matrix fed by a
    constant input, `W̃_l = [W_l b_l]`: the layer takes *one* normalised step in the joint Frobenius norm,
    `ΔW̃_l = −gain (η/L) s_l ∇̃_l / ‖∇̃_l‖_F` with `∇̃_l = [∇_W ∇_b]`, and `G` uses `‖∇̃_l‖_F`. Why: the
    majoriser of AGD bounds the relative change of each layer's map `h ↦ W h + b`; splitting the bias into its
    own "layer" would change L (the depth that divides every step) and double-count the layer's perturbation.
    With `bias=False` the rule is exactly the published one (tested against a transcription).
    `s_l` stays the weight's scale `g_l sqrt(out/in)` (g_l the layer gain; 1 reproduces upstream).

(b) **Spherical weights** (`FrobeniusLinear`: `W = g V`, ‖V‖_F = 1, paper 000). The radial part of the
    gradient is zero (the layer divides by ‖V‖_F), so the step is taken along the sphere's geodesic:
    the tangent gradient `∇^T_W = P_V ∇_V / g` replaces `∇_W`, and the layer's scale is the norm the
    construction fixes and certifies, `s_l = ‖W_l‖_F = g_l` (≥ ‖W_l‖₂): AGD's deep-relative-trust majoriser
    holds with any norm bounding the operator norm, and this one is exact for every point of the sphere,
    whereas upstream's sqrt(out/in) is the spectral norm of its own initialisation only. (Using the spectral
    norm of the orthogonal init, g/sqrt(min(in, out)), was tried: the turns were sqrt(width) times smaller and
    training on the closed-loop toy was several times slower.) The Euclidean step
    `ΔW = −gain (η/L) s_l ∇^T_W/‖∇̃_l‖` becomes the turn `V ← Exp_V(ΔW / g)` by the angle
    `θ_l = ‖ΔW‖_F / g ≤ gain·η/L` (at most a quarter turn π/2; a larger angle is capped and reported).
    Exp is taken at the normalised base point `V/‖V‖_F` (the point the layer computes with), so float32
    rounding does not accumulate into drift off the sphere; see `lipnet.optim.sphere` for the measured drift.

(c) **Loss curvature** (`adaptive=True`, what `from_model` and `lipnet train --optimizer agd` use). AGD's majoriser
    `−ηG + ½(e^η − 1)²` assumes a loss of unit curvature in an output of unit scale. A controller's loss is
    not: its output is scaled by the layer gains Π g_l (the Lipschitz budget) and its curvature comes through
    the plant. Measured on `lipnet train --plant double_integrator` with the published rule: η = 0.76 on
    the first step, then the loss rose from 1.0 to 963 in three steps and never recovered. The majoriser
    with curvature κ, `−ηG + ½κ(e^η − 1)²`, is minimised at `η = log((1 + sqrt(1 + 4G/κ)) / 2)`; κ starts at
    1 (the published step) and is learnt as the majorisation-minimisation argument requires: a step that
    increases the loss on the step's batch is undone and retried with κ × 4 (up to 8 times), an accepted step
    relaxes κ by a factor 0.9. Nothing to tune; the cost is one more loss evaluation per step.

A layer whose gradient is exactly zero does not move (the reference would divide by zero). A non-finite loss
or gradient skips the step and says so in `last_info["skipped"]`.
"""

from __future__ import annotations

import math

import torch

from lipnet.exceptions import LipnetValue

from .base import LipnetOptimizer
from .layerwise import NON_FINITE, LayerInfo, all_finite, check_options, layers_of, quarter_turn

__all__ = ["AGD"]


class AGD(LipnetOptimizer, torch.optim.Optimizer):
    """Automatic gradient descent: no learning rate; biases and spherical weights handled as documented above.

    Parameters
    ----------
    model : a `Controller` or any module made of `PlainLinear` / `FrobeniusLinear` layers (an MLP chain).
    gain : multiplier of every update (1, as published; nothing to tune).
    """

    wants_loss_closure = False

    def __init__(self, model: torch.nn.Module, gain: float = 1.0, adaptive: bool = False):
        if not math.isfinite(gain) or gain <= 0:
            raise LipnetValue(f"gain must be a positive number, got {gain}")
        self.layers: list[LayerInfo] = layers_of(model, "agd")
        self.depth = len(self.layers)
        self.gain = float(gain)
        params = [p for info in self.layers for p in (info.weight, info.bias) if p is not None]
        super().__init__(params, defaults=dict(gain=self.gain, kappa=1.0))
        self.adaptive = bool(adaptive)
        self.last_info = {}

    @classmethod
    def from_model(cls, model: torch.nn.Module, **options) -> AGD:
        """Build over the model's linear layers (options: `gain`, `adaptive` (default True: learn κ))."""
        check_options("agd", options, ("gain", "adaptive"))
        options.setdefault("adaptive", True)
        return cls(model, **options)

    def scale(self, info: LayerInfo) -> float:
        """Layer scale `s_l`: upstream's sqrt(out/in) (times the gain) for a plain weight, ‖W‖_F = g on a sphere."""
        if info.spherical:
            return info.gain
        return info.gain * math.sqrt(info.fan_out / info.fan_in)

    @torch.no_grad()
    def step(self, closure=None):
        """One AGD step; `closure` (optional) zeroes grads, calls backward and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grads = [(info.weight.grad, None if info.bias is None else info.bias.grad) for info in self.layers]
        if (loss is not None and not bool(torch.isfinite(torch.as_tensor(loss)).all())) or \
                not all_finite(g for pair in grads for g in pair):
            self.last_info = {"skipped": NON_FINITE, "loss": None if loss is None else float(loss.detach())}
            return loss

        # Gradient of each layer's map h ↦ W h + b in weight units (tangent part for a sphere).
        tangent, norms = [], []
        for info, (gw, gb) in zip(self.layers, grads, strict=True):
            gw = torch.zeros_like(info.weight) if gw is None else gw
            if info.spherical:
                gw = info.manifold.proju(info.weight, gw) / info.gain
            gb = None if info.bias is None else (torch.zeros_like(info.bias) if gb is None else gb)
            sq = gw.pow(2).sum() + (0.0 if gb is None else gb.pow(2).sum())
            tangent.append((gw, gb))
            norms.append(float(sq.sqrt()))
        summary = sum(self.scale(i) * n for i, n in zip(self.layers, norms, strict=True)) / self.depth
        group = self.param_groups[0]
        if not (self.adaptive and closure is not None):
            eta = self._eta(summary, 1.0)
            capped = self._apply(tangent, norms, eta)
            retries = 0
        else:
            saved = [p.detach().clone() for p in self._params()]
            base_loss = float(loss.detach())
            for retries in range(9):  # noqa: B007 - the count is reported
                eta = self._eta(summary, group["kappa"])
                capped = self._apply(tangent, norms, eta)
                with torch.enable_grad():
                    new_loss = float(closure().detach())
                if math.isfinite(new_loss) and new_loss <= base_loss:
                    group["kappa"] = max(1.0, 0.9 * group["kappa"])
                    break
                for p, v in zip(self._params(), saved, strict=True):
                    p.copy_(v)
                group["kappa"] *= 4.0
            else:
                eta, capped = 0.0, 0  # no decrease found: the parameters stay where they were
        summary_info = {"kappa": group["kappa"], "retries": retries} if self.adaptive else {}
        self.last_info = {"eta": eta, "summary": summary, "loss": None if loss is None else float(loss.detach()),
                          "capped_layers": capped, "skipped": None} | summary_info
        return loss

    def _params(self):
        return [p for info in self.layers for p in (info.weight, info.bias) if p is not None]

    @staticmethod
    def _eta(summary: float, kappa: float) -> float:
        """Minimiser of the majoriser −ηG + ½κ(e^η − 1)² (κ = 1: the published step size)."""
        return math.log(0.5 * (1.0 + math.sqrt(1.0 + 4.0 * summary / kappa)))

    def _apply(self, tangent, norms, eta: float) -> int:
        """The per-layer normalised update of size η/L (a geodesic turn on spheres); returns capped layers."""
        capped = 0
        for info, (gw, gb), n in zip(self.layers, tangent, norms, strict=True):
            if n == 0.0:
                continue
            factor = self.gain * eta / self.depth * self.scale(info) / n
            if info.bias is not None:
                info.bias.sub_(factor * gb)
            if not info.spherical:
                info.weight.sub_(factor * gw)
                continue
            u = (-factor / info.gain) * gw  # ΔW / g: the tangent step of V
            angle = float(u.norm())
            if angle > quarter_turn():
                u.mul_(quarter_turn() / angle)
                capped += 1
            base = info.manifold.projx(info.weight)
            info.weight.copy_(info.manifold.expmap(base, info.manifold.proju(base, u)))
        return capped
