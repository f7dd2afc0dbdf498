"""The sphere optimisers of paper 000 (Cho & Shin 2023; no public code: every choice is stated here).

Both move all parameters together along one update curve with a scalar step, chosen automatically:

* weights `V_l` on unit spheres (`FrobeniusLinear.direction`): `V_l(t) = Exp_{V_l}(−t d_l)`, the great circle
  through `V_l` with velocity `−d_l` (`d_l` tangent);
* Euclidean parameters (biases): the straight line `b(t) = b − t d_b`.

`SphereNewton` (algorithm 1) takes the second-order step along this curve, `SphereMM` (algorithm 2) the
minimiser of an architecture-aware majoriser of the loss along it (see each class).

Shared choices:
- Exp is applied at the normalised base point `V/‖V‖_F` (the parameters are set to it at the start of each step,
  before the loss is evaluated). The exact exponential map keeps ‖V‖_F = 1 in exact arithmetic, but each float32
  step rounds the norm by ~1e-7 and nothing damps that error (a turn by θ multiplies it by cos²θ ≈ 1), so it
  random-walks. Measured (`benchmarks/optimizer_overhead.py`, float32, 8-8 network): with the base normalisation
  the worst |‖V_l‖_F − 1| over 10,000 steps is 1.7e-7 (sphere-newton) / 1.8e-7 (sphere-mm), the rounding of one
  step; without it 2.9e-6 / 3.5e-6 after only 2,000 steps. A `FrobeniusLinear` computes with `V/‖V‖_F` anyway, so
  the normalisation changes no function value; it only stops the rounding from accumulating. This is the only
  re-normalisation; `renormalize=False` turns it off.
- A non-finite loss or gradient skips the step (`last_info["skipped"] = "nonfinite_loss"`), parameters untouched.
- The closure (`wants_loss_closure = True`) returns the loss with its graph and calls no backward; it is called
  again (without grad) to check the decrease, so it must be deterministic.
"""

from __future__ import annotations

import math

import torch

from lipnet.exceptions import LipnetArgument, LipnetValue
from lipnet.manifolds import Euclidean, Sphere, manifold_of

from .base import LipnetOptimizer
from .layerwise import NON_FINITE, all_finite, check_options, layers_of

__all__ = ["SphereNewton", "SphereMM"]

# sphere-mm's direction: the gradient scaled per coordinate by a running RMS with Adam's β₂. Measured on the 7 linear
# benchmark tasks × 3 seeds (default `lipnet train`, final cost / LQR optimum, `benchmarks/optimizers.py`): lower on
# 12 of 21 (task, seed) pairs, higher on 3 (dcmotor seeds 1–2 by ≤ 2.4e-4, random-1 by 1e-6), median
# 1.00071 → 1.00051; ahead of every learning-rate-free peer on 14/21 pairs against 11/21. With Adam's first moment
# too (`momentum`) for the whole run random-0 and random-3 ended higher (seed 0: 1.00081 / 1.00083 against 1.00071 /
# 1.00063; it slows the imitation), so the default numerator is the gradient; the training loop turns the running
# mean on for the rollout phase after the LQR imitation only (`lipnet.train.loop.ROLLOUT_MOMENTUM`, measured there).
# On a deterministic least-squares fit with inputs over two decades the plain gradient is faster (tests: 7.2 against
# 52 after 150 steps; 21 with the scaling and the running mean): the majoriser's curvature does not see the
# direction, so the scaling pays only where the loss is noisy and ill-conditioned, as the closed-loop rollouts are.
PRECONDITION_DECAY = 0.999


def _trainable(params, name: str) -> list[torch.Tensor]:
    params = [p for p in params if p.requires_grad]
    if not params:
        raise LipnetArgument(f"{name} got no trainable parameters")
    for p in params:
        m = manifold_of(p)
        if not ((isinstance(m, Sphere) and m.batch_dims == 0) or isinstance(m, Euclidean)):
            raise LipnetArgument(f"{name} handles parameters on a Sphere or Euclidean ones, not {m!r}; "
                                 "use manifold-adam for Stiefel parameters")
    return params


class _CurveOptimizer(LipnetOptimizer, torch.optim.Optimizer):
    """Common machinery: closure evaluation, the update curve, the decrease check, state.

    Every parameter moves by its own manifold's maps (`manifold_of`): Exp on a sphere, the straight line on a
    Euclidean parameter.
    """

    wants_loss_closure = True
    _state_key = "curve"

    def __init__(self, params, renormalize: bool, defaults: dict):
        params = list(params)
        self._manifolds = [manifold_of(p) for p in params]
        self._spherical = [isinstance(m, Sphere) for m in self._manifolds]
        self.renormalize = bool(renormalize)
        super().__init__(params, defaults)
        self.last_info = {}

    @property
    def _params(self) -> list[torch.Tensor]:
        return self.param_groups[0]["params"]

    @property
    def _memory(self) -> dict:
        # Scalar state under a non-tensor key: torch's state_dict/load_state_dict keep such keys as they are.
        return self.state.setdefault(self._state_key, {})

    def _loss_and_grads(self, closure, create_graph: bool):
        if closure is None:
            raise LipnetArgument(f"{type(self).__name__}.step needs a closure returning the loss (with its graph, "
                                 "without calling backward)")
        with torch.enable_grad():
            loss = closure()
            if not torch.is_tensor(loss) or loss.numel() != 1:
                raise LipnetArgument("the closure must return the loss as a scalar tensor")
            if not bool(torch.isfinite(loss)):
                return loss, None
            if not loss.requires_grad:
                raise LipnetArgument("the closure's loss has no graph: return it without .item()/.detach() and "
                                     "without calling backward")
            grads = torch.autograd.grad(loss, self._params, create_graph=create_graph, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(self._params, grads, strict=True)]
        return loss, grads

    def _base_points(self) -> list[torch.Tensor]:
        return [p.detach().clone() for p in self._params]

    @torch.no_grad()
    def _normalize_base(self) -> None:
        # Start every step at V/‖V‖_F (module docstring), *before* the loss is evaluated, so that φ and its
        # derivatives are those of the curve actually followed.
        self._entry = [p.detach().clone() for p in self._params]  # restored if the step is skipped
        if self.renormalize:
            for p, m, s in zip(self._params, self._manifolds, self._spherical, strict=True):
                if s:
                    p.copy_(m.projx(p))

    @torch.no_grad()
    def _move(self, base, velocity, t: float) -> None:
        """Set the parameters to the curve point `c(t)`: Exp_x(t v) on spheres, x + t v elsewhere."""
        for p, x, v, m in zip(self._params, base, velocity, self._manifolds, strict=True):
            p.copy_(m.expmap(x, t * v))

    @torch.no_grad()
    def _evaluate(self, closure) -> float:
        value = float(closure().detach())
        return value if math.isfinite(value) else math.inf

    def _skip(self, loss) -> torch.Tensor:
        with torch.no_grad():
            for p, e in zip(self._params, self._entry, strict=True):
                p.copy_(e)
        self.last_info = {"skipped": NON_FINITE, "loss": float(loss.detach()), "safeguards": [NON_FINITE]}
        return loss.detach()


class SphereNewton(_CurveOptimizer):
    """Algorithm 1: Newton step along the update curve, `φ''(0)` by automatic differentiation, safeguarded.

    With `φ(t) = L(c(t))`, `c'(0) = −d` and `c''(0) = −‖d_l‖² V_l` on sphere l (0 for biases):

        φ'(0)  = −⟨∇L, d⟩                          (= −‖grad L‖² for the default d)
        φ''(0) = ⟨d, ∇²L d⟩ − Σ_l ‖d_l‖² ⟨∇_l L, V_l⟩   (curvature of the sphere in the second term)

    `∇²L d` is one Hessian-vector product by double backward (reverse over reverse) of the closure's
    graph; no Hessian is formed. Cost: the gradient pass keeps its graph, plus one more backward through it,
    plus one forward to check the decrease (measured in `benchmarks/optimizer_overhead.py`).

    Step `t = −φ'(0)/φ''(0)`, with these safeguards (each reported in `last_info["safeguards"]`):

    - `nonpositive_curvature`: φ''(0) ≤ 0 or not finite → the fallback step `t_fb` below;
    - `tiny_curvature`: 0 < φ''(0) ≤ sqrt(eps)·(|⟨d, ∇²L d⟩| + |Σ‖d_l‖²⟨∇_l L, V_l⟩|), i.e. its two terms
      cancel below rounding → the fallback step;
    - `quarter_turn`: the step would turn some layer by more than `max_angle` (π/2; beyond it the great
      circle heads back) → `t = max_angle / max_l ‖d_l‖`;
    - `backtracked`/`no_decrease`: Armijo check `φ(t) ≤ φ(0) + c·t·φ'(0)` (c = 1e-4); on failure t is halved
      up to `max_backtracks` times; if none passes the parameters are left unchanged.

    Fallback `t_fb`: twice the last accepted step, capped at the quarter turn; the quarter turn on the first
    step (or `1/‖d‖` if no parameter is spherical).

    Parameters
    ----------
    params : parameters (ManifoldParameters on a `Sphere`, others Euclidean), or use `from_model`.
    normalize_layers : scale `d` per parameter to unit norm so that every sphere turns by the same angle.
    armijo, max_backtracks, max_angle : the decrease and quarter-turn safeguards.
    renormalize : apply Exp at `V/‖V‖_F` (see module docstring).
    """

    needs_double_backward = True  # the HVP differentiates the closure twice (not a compiled rollout)

    _state_key = "sphere_newton"

    def __init__(self, params, *, normalize_layers: bool = False, armijo: float = 1e-4, max_backtracks: int = 30,
                 max_angle: float = math.pi / 2, check_decrease: bool = True, renormalize: bool = True):
        params = _trainable(params, "sphere-newton")
        if not 0 < max_angle <= math.pi / 2:
            raise LipnetValue(f"max_angle must be in (0, π/2], got {max_angle}")
        if not 0 <= armijo < 0.5:
            raise LipnetValue(f"armijo must be in [0, 0.5), got {armijo}")
        self.normalize_layers, self.armijo = bool(normalize_layers), float(armijo)
        self.max_backtracks, self.max_angle = int(max_backtracks), float(max_angle)
        self.check_decrease = bool(check_decrease)
        super().__init__(params, renormalize, defaults={})

    @classmethod
    def from_model(cls, model: torch.nn.Module, **options) -> SphereNewton:
        """Build over every trainable parameter of `model` (spheres and biases)."""
        check_options("sphere-newton", options, ("normalize_layers", "armijo", "max_backtracks", "max_angle",
                                                 "check_decrease", "renormalize"))
        return cls(model.parameters(), **options)

    def curve_derivatives(self, closure, direction=None):
        """`(loss, grads, d, φ'(0), φ''(0), (⟨d,∇²L d⟩, curvature term))` at the current point."""
        self._normalize_base()
        loss, grads = self._loss_and_grads(closure, create_graph=True)
        if grads is None:
            return loss, None, None, math.nan, math.nan, (math.nan, math.nan)
        base = self._base_points()
        gdet = [g.detach() for g in grads]
        given = gdet if direction is None else [v.detach() for v in direction]
        d = [m.proju(x, v) for x, v, m in zip(base, given, self._manifolds, strict=True)]
        if self.normalize_layers:
            d = [v / v.norm() if float(v.norm()) > 0 else v for v in d]
        dphi = -float(sum((g * v).sum() for g, v in zip(gdet, d, strict=True)))
        with_graph = [(g, v) for g, v in zip(grads, d, strict=True) if g.requires_grad]
        dhd = 0.0
        if with_graph:
            hv = torch.autograd.grad(sum((g * v).sum() for g, v in with_graph), self._params, allow_unused=True)
            dhd = float(sum((h * v).sum() for h, v in zip(hv, d, strict=True) if h is not None))
        curv = float(sum(v.pow(2).sum() * (g * x).sum()
                         for g, v, x, s in zip(gdet, d, base, self._spherical, strict=True) if s))
        return loss, gdet, d, dphi, dhd - curv, (dhd, curv)

    def step(self, closure, direction=None):
        """One safeguarded Newton step along `t ↦ Exp(−t d)`; `direction` d defaults to the Riemannian gradient."""
        loss, grads, d, dphi, d2phi, (dhd, curv) = self.curve_derivatives(closure, direction)
        if grads is None or not all_finite(grads):
            return self._skip(loss)
        phi0 = float(loss.detach())
        info = {"loss": phi0, "dphi": dphi, "d2phi": d2phi, "newton_t": None, "safeguards": [], "skipped": None}
        self.last_info = info
        if not dphi < 0:
            info["safeguards"].append("stationary" if dphi == 0 else "not_descent")
            info.update(t=0.0, angle=0.0, loss_new=phi0, backtracks=0)
            return loss.detach()
        speeds = [float(v.norm()) for v, s in zip(d, self._spherical, strict=True) if s]
        vmax = max(speeds, default=0.0)
        t_max = self.max_angle / vmax if vmax > 0 else math.inf
        t_last = self._memory.get("t_last")
        t_fb = min(t_max, 2 * t_last) if t_last else t_max
        if not math.isfinite(t_fb):
            t_fb = 1.0 / math.sqrt(-dphi)
        tiny = math.sqrt(torch.finfo(grads[0].dtype).eps) * (abs(dhd) + abs(curv))
        if not math.isfinite(d2phi) or d2phi <= 0:
            info["safeguards"].append("nonpositive_curvature")
            t = t_fb
        elif d2phi <= tiny:
            info["safeguards"].append("tiny_curvature")
            t = t_fb
        else:
            t = info["newton_t"] = -dphi / d2phi
        if t > t_max:
            info["safeguards"].append("quarter_turn")
            t = t_max
        base = self._base_points()
        velocity = [-v for v in d]
        original = [p.detach().clone() for p in self._params]
        phi_t, k = phi0, 0
        for attempt in range(self.max_backtracks + 1):
            k = attempt
            self._move(base, velocity, t)
            if not self.check_decrease:
                phi_t = math.nan
                break
            phi_t = self._evaluate(closure)
            if phi_t <= phi0 + self.armijo * t * dphi:
                break
            t *= 0.5
        else:
            with torch.no_grad():
                for p, o in zip(self._params, original, strict=True):
                    p.copy_(o)
            info["safeguards"].append("no_decrease")
            t, phi_t = 0.0, phi0
        if k > 0 and "no_decrease" not in info["safeguards"]:
            info["safeguards"].append("backtracked")
        if t > 0:
            self._memory["t_last"] = t
        info.update(t=t, angle=t * vmax, loss_new=phi_t, backtracks=k)
        return loss.detach()


class _InputNorms:
    """Forward hook: Σ‖h‖² and the number of input rows h of a layer, accumulated while `on` (as tensors,
    so that a compiled rollout neither guards on a count nor recompiles)."""

    def __init__(self):
        self.on, self.sq, self.rows = False, None, None

    def start(self) -> None:
        self.on, self.sq, self.rows = True, torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.float64)

    def __call__(self, module, inputs, output) -> None:
        if self.on:
            h = inputs[0].detach()
            self.sq = self.sq + h.pow(2).sum().double()
            self.rows = self.rows + h.numel() // max(h.shape[-1], 1)

    def rms(self) -> float:
        rows = 0.0 if self.rows is None else float(self.rows)
        return math.sqrt(float(self.sq) / rows) if rows else 0.0


class SphereMM(_CurveOptimizer):
    """Algorithm 2: majorisation–minimisation along the sphere curve, with a closed-form step.

    Curve (a choice: each layer normalised, so one angle θ for all, as AGD's per-layer normalised update):
    `V_l(θ) = Exp_{V_l}(θ e_l)`, `e_l = d_l/‖d_l‖` for a tangent descent direction d_l; a bias is an extra column
    of its layer fed by the layer's RMS input norm `ρ_l`, so it moves by `b_l(θ) = b_l − g_l ρ_l sin θ · u_l`,
    `u_l` a unit descent direction of the bias (it then perturbs the layer's output no more than a weight turned by
    θ does). The paper's direction is the Riemannian negative gradient `ξ_l = −grad_l L`; by default
    (`precondition=True`) it is scaled per coordinate first, `d_l = −P_V(s ⊙ ∇_{V_l} L)` with s = 1/RMS of the past
    gradients (`_scales`), which leaves the majoriser below valid (it holds for any unit-speed curve) with the
    first-order term `⟨ξ_l, e_l⟩` in place of ‖ξ_l‖. On ill-conditioned closed loops the plain gradient's steps,
    each an exact minimisation along it, stall (θ ~ 2e-5 per step on dcmotor's tail).

    Majoriser, for a chain `z_l = W_l h_{l−1} + b_l`, `h_l = σ(z_l)`, 1-Lipschitz σ, `W_l = g_l V_l`:
    every `W_l(θ)` keeps `‖W_l(θ)‖₂ ≤ g_l` (normalised by construction) and `‖ΔV_l‖_F = 2 sin(θ/2)`,
    `sin θ ≤ 2 sin(θ/2)`, so telescoping through the layers above and Minkowski over the data give

        RMS‖Δf‖ ≤ 2 sin(θ/2) · K,   K = Σ_l (Π_{k>l} g_k) · g_l ρ_l · (#moving parts of layer l: weight, bias)

    (depth and gains through the products, widths through the measured activation norms ρ_l). With the
    first-order change of the parameters (`a_l = ⟨∇_{W_l} L, W_l⟩`, the radial part the normalised layer
    hides, from the layer outputs: `a_l = Σ ⟨∂L/∂z_l, z_l − b_l⟩`) and a loss of curvature β in the network
    output (½‖·‖² averaged over samples: β = 1):

        M(θ) = L − G sin θ + Q (1 − cos θ),   G = Σ_l ⟨ξ_l, e_l⟩ + Σ_l g_l ρ_l ⟨−∇_{b_l} L, u_l⟩,  Q = β K² − Σ_l a_l

    minimised in closed form by `θ* = atan2(G, Q)`, capped at `max_angle` (π/2; reached only when Q ≤ 0).
    `M(θ*) ≤ M(0) = L`. For one layer under a square loss M is an exact upper bound, so the loss decreases
    monotonically. For deeper nets M neglects the network's own curvature in its parameters (as AGD's
    majoriser does) and β of a general loss (a closed-loop cost) is unknown, so β is *estimated*: a step is
    accepted only if the new loss is below M(θ*); otherwise β is raised to what the observed loss needs (at
    least doubled) and θ* recomputed (one forward each); after an accepted step β is divided by `relax` so
    that it can shrink again. Every accepted step therefore satisfies `L_new ≤ M(θ*) ≤ L`.

    Parameters
    ----------
    model : a `Controller` (or chain of `FrobeniusLinear` layers); a forward hook per layer measures ρ_l (`close()`
        removes them).
    loss_curvature : initial β (1 for a mean ½‖f − y‖² loss).
    relax : factor by which β shrinks after an accepted step (≥ 1; 1 keeps β monotone).
    max_backtracks, max_angle, renormalize : safeguards and base-point normalisation (module docstring).
    momentum : β₁ of a running mean of the gradients that replaces the gradient in the direction's numerator
        (0: none); the first-order term stays ⟨ξ_l, e_l⟩ with the current gradient, so the majoriser still holds.
    """

    _state_key = "sphere_mm"

    def __init__(self, model: torch.nn.Module, *, loss_curvature: float = 1.0, relax: float = 2.0,
                 max_backtracks: int = 30, max_angle: float = math.pi / 2, renormalize: bool = True,
                 precondition: bool = True, momentum: float = 0.0):
        self.layers = layers_of(model, "sphere-mm")
        self.precondition = bool(precondition)
        if not 0.0 <= momentum < 1.0:
            raise LipnetValue(f"sphere-mm's momentum must lie in [0, 1), got {momentum!r}")
        self.momentum = float(momentum)
        if not all(info.spherical for info in self.layers):
            raise LipnetArgument("sphere-mm needs Frobenius-normalised layers (layer='frobenius')")
        if not (loss_curvature > 0 and relax >= 1 and 0 < max_angle <= math.pi / 2):
            raise LipnetValue("need loss_curvature > 0, relax >= 1 and max_angle in (0, π/2]")
        params = [p for info in self.layers for p in (info.weight, info.bias) if p is not None]
        self.relax, self.max_backtracks, self.max_angle = float(relax), int(max_backtracks), float(max_angle)
        super().__init__(params, renormalize, defaults={})
        self._memory.setdefault("beta", float(loss_curvature))
        # Registered once: a hook object that changed at every step would make dynamo recompile every step.
        self._input_norms = [_InputNorms() for _ in self.layers]
        self._hooks = [info.module.register_forward_hook(rec)
                       for info, rec in zip(self.layers, self._input_norms, strict=True)]

    def close(self) -> None:
        """Remove this optimiser's measuring hooks from the model (idle between steps, but kept until then)."""
        for h in self._hooks:
            h.remove()
        self._hooks = []

    @classmethod
    def from_model(cls, model: torch.nn.Module, **options) -> SphereMM:
        """Build over the model's Frobenius-normalised layers (options: `loss_curvature`, `relax`, ...)."""
        check_options("sphere-mm", options, ("loss_curvature", "relax", "max_backtracks", "max_angle", "renormalize",
                                             "precondition", "momentum"))
        return cls(model, **options)

    def _measure(self, closure):
        """Loss, parameter gradients, RMS input norms ρ_l and radial terms a_l, from one forward/backward.

        a_l = Σ_calls ⟨∂L/∂z, z − b⟩ over the layer's outputs z = W h + b equals ⟨∂L/∂W, W⟩ = g_l ∂L/∂g_l
        (W = g_l V/‖V‖ is linear in g_l), so it is read off the gradient of the gain, made differentiable for
        this one pass. ρ_l comes from persistent input-norm hooks that accumulate tensors. Neither keeps
        per-call Python state, so a `torch.compile`d rollout (`plants.CompiledRollout`) traces one graph.
        """
        gains = [info.module.gain for info in self.layers]
        for rec in self._input_norms:
            rec.start()
        for g in gains:
            g.requires_grad_(True)
        try:
            with torch.enable_grad():
                loss = closure()
            for rec in self._input_norms:
                rec.on = False
            if not torch.is_tensor(loss) or loss.numel() != 1:
                raise LipnetArgument("the closure must return the loss as a scalar tensor")
            if not bool(torch.isfinite(loss)):
                return loss, None, None, None
            if not loss.requires_grad:
                raise LipnetArgument("the closure's loss has no graph: return it without calling backward")
            grads = torch.autograd.grad(loss, [*self._params, *gains], allow_unused=True)
        finally:
            for rec in self._input_norms:
                rec.on = False
            for g in gains:
                g.requires_grad_(False)
        n = len(self._params)
        pgrads = [torch.zeros_like(p) if g is None else g for p, g in zip(self._params, grads[:n], strict=True)]
        radial = [0.0 if dg is None else float(g) * float(dg) for g, dg in zip(gains, grads[n:], strict=True)]
        rho = [rec.rms() for rec in self._input_norms]
        return loss, pgrads, rho, radial

    def step(self, closure):
        """One MM step along the curve (closed-form θ*, β estimated as documented in the class)."""
        self._normalize_base()
        loss, grads, rho, radial = self._measure(closure)
        if grads is None or not all_finite(grads) or not all(math.isfinite(a) for a in radial):
            return self._skip(loss)
        L0 = float(loss.detach())
        base = self._base_points()
        it = iter(zip(base, grads, strict=True))
        moves, G, K, A = [], 0.0, 0.0, 0.0
        gains = [info.gain for info in self.layers]
        scales = iter(self._scales(grads) if self.precondition else [1.0] * len(grads))
        steer = iter(self._averaged(grads))  # the gradients the direction is built from
        for l, info in enumerate(self.layers):
            x, g = next(it)
            xi = -info.manifold.proju(x, g)  # the Riemannian negative gradient
            s = next(scales)  # one per parameter, weight and bias alike, so the two stay aligned
            m = next(steer)
            e = -info.manifold.proju(x, m * s) if self.precondition or self.momentum else xi
            n, slope = float(e.norm()), float((xi * e).sum())
            above = math.prod(gains[l + 1:])
            if n > 0 and slope > 0:  # a descent direction (the projection could, in principle, turn it away)
                moves.append((info.weight, x, e / n, info.manifold, None))
                G += slope / n
                K += above * info.gain * rho[l]
                A += radial[l]
            if info.bias is not None:
                b, gb = next(it)
                d = next(steer) * next(scales)
                nb, slope = float(d.norm()), float((gb * d).sum())
                kappa = info.gain * rho[l]
                if nb > 0 and kappa > 0 and slope > 0:  # with momentum the mean can point uphill
                    moves.append((info.bias, b, -d / nb, manifold_of(info.bias), kappa))
                    G += kappa * slope / nb
                    K += above * info.gain * rho[l]
        info = {"loss": L0, "G": G, "A": A, "K": K, "rho": rho, "safeguards": [], "skipped": None}
        self.last_info = info
        if G == 0.0:
            info["safeguards"].append("stationary")
            info.update(theta=0.0, beta=self._memory["beta"], majorant=L0, loss_new=L0, backtracks=0)
            return loss.detach()
        beta, cap = self._memory["beta"], self.max_angle
        eps = torch.finfo(loss.dtype).eps
        k = 0
        for attempt in range(self.max_backtracks + 1):
            k = attempt
            Q = beta * K * K - A
            theta = math.atan2(G, Q)
            if theta > cap:
                theta = cap
                if "quarter_turn" not in info["safeguards"]:
                    info["safeguards"].append("quarter_turn")
            c = 1.0 - math.cos(theta)
            M = L0 - G * math.sin(theta) + Q * c
            self._apply(moves, theta)
            L_new = self._evaluate(closure)
            if L_new <= M + 16 * eps * (abs(L0) + G * math.sin(theta) + abs(Q) * c):
                break
            if K > 0 and c > 0 and math.isfinite(L_new):
                need = (L_new - L0 + G * math.sin(theta) + A * c) / (K * K * c)
                beta = max(2.0 * beta, 1.1 * need)
            else:
                cap = theta / 2
        else:
            self._apply(moves, 0.0)
            info["safeguards"].append("no_decrease")
            theta, M, L_new = 0.0, L0, L0
        if k > 0 and "no_decrease" not in info["safeguards"]:
            info["safeguards"].append("backtracked")
        self._memory["beta"] = beta / self.relax if theta > 0 else beta
        info.update(theta=theta, beta=beta, majorant=M, loss_new=L_new, backtracks=k)
        return loss.detach()

    @torch.no_grad()
    def _averaged(self, grads: list[torch.Tensor]) -> list[torch.Tensor]:
        """The gradients, or with `momentum` their running mean `m ← β₁ m + (1 − β₁) g` (started at the first
        gradient, so no bias correction is needed): the direction only, never the first-order term."""
        if not self.momentum:
            return grads
        out = []
        for p, g in zip(self._params, grads, strict=True):
            state = self.state[p]
            m = state.get("exp_avg")
            if m is None:
                m = state["exp_avg"] = g.detach().clone()
            else:
                m.mul_(self.momentum).add_(g, alpha=1.0 - self.momentum)
            out.append(m)
        return out

    @torch.no_grad()
    def _scales(self, grads: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per-coordinate `1 / (√v̂ + ε)`, v̂ the bias-corrected running mean of squared gradients (Adam's second
        moment, decay `PRECONDITION_DECAY`), ε = 1e-8 of the tensor's largest √v̂: they shape the direction only."""
        t = self._memory["precondition_steps"] = self._memory.get("precondition_steps", 0) + 1
        corr = 1.0 - PRECONDITION_DECAY**t
        out = []
        for p, g in zip(self._params, grads, strict=True):
            state = self.state[p]
            if "exp_avg_sq" not in state:
                state["exp_avg_sq"] = torch.zeros_like(g)
            v = state["exp_avg_sq"].mul_(PRECONDITION_DECAY).addcmul_(g, g, value=1.0 - PRECONDITION_DECAY)
            r = (v / corr).sqrt()
            out.append(1.0 / (r + 1e-8 * float(r.max()) + 1e-300))
        return out

    @torch.no_grad()
    def _apply(self, moves, theta: float) -> None:
        """Each part to its curve point: the weight turned by θ on its sphere, the bias moved by `κ sin θ`."""
        for p, x, e, manifold, kappa in moves:
            p.copy_(manifold.expmap(x, (theta if kappa is None else kappa * math.sin(theta)) * e))
