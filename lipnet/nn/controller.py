"""The `Controller`: raw plant state → input features → Lipschitz MLP → output scaling → saturation.

    z = (x − x_offset) / state_scale          (diagonal input scaling; periodic states: see below)
    y = W_D σ(⋯ σ(W_1 z + b_1) ⋯) + b_D       (normalised layers, 1-Lipschitz σ)
    v = u_offset + action_scale ⊙ y           (diagonal output scaling)
    u = sat(v)                                (1-Lipschitz per channel: smooth tanh or hard clip)

With `centered=True` the output is anchored at the equilibrium: `v = v_eq + action_scale ⊙ (y(z) − y(0))`, where
`v_eq = sat⁻¹(u_offset)`, so the state `x = state_offset` gets exactly the action `u_offset` (no steady offset,
and the closed loop keeps the plant's equilibrium, which a region-of-attraction certificate needs). `y(0)` is a
constant, so every Lipschitz bound is unchanged; `folded_weights` folds it into the last bias.

Periodic states (`periodic`, 2π-periodic angles) enter through the circle instead: `z_p = sin(x_p − o_p)/s_p`
in place, and one more feature `(cos(x_p − o_p) − 1)/s_p` per periodic p appended after the n_x others, so
the controller is a continuous function on the circle. Every feature is 0 at `x = offset`, and the map
`d ↦ (sin d, cos d − 1)` is the unit circle parametrised by arc length: its Jacobian has norm exactly 1 and a
chord is never longer than its arc, so x ↦ z is `1/min(state_scale)`-Lipschitz with or without periodic states.

Every stage is Lipschitz with a known constant, so `lipschitz_bound()` from raw state to actuator
command is `max(action_scale) · Π_l Lip(W_l) / min(state_scale)` by construction.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from lipnet.exceptions import LipnetDimension, LipnetValue

from .activations import ACTIVATIONS, make_activation
from .layers import LAYER_KINDS, make_linear

__all__ = ["Controller", "SATURATIONS"]

SATURATIONS = ("tanh", "clip", "none")


def _vec(value, n: int, name: str, default: float) -> torch.Tensor:
    if value is None:
        return torch.full((n,), float(default), dtype=torch.float64)
    t = torch.as_tensor(np.asarray(value, dtype=np.float64).reshape(-1))
    if t.numel() == 1:
        t = t.expand(n).clone()
    if t.numel() != n:
        raise LipnetDimension(f"{name} has {t.numel()} entries but {n} are needed")
    if not torch.isfinite(t).all():
        raise LipnetDimension(f"{name} has non-finite entries: {t.tolist()}")
    return t


def _periodic(value, n_x: int) -> tuple[int, ...]:
    """The validated tuple of periodic state indices, in the order given (`plants.base.periodic_indices`, strict)."""
    from plants.base import periodic_indices
    from plants.errors import PlantSpecError

    try:
        return periodic_indices(value, n_x, strict=True)
    except PlantSpecError as exc:
        raise LipnetDimension(str(exc)) from None


class Controller(nn.Module):
    """Lipschitz-bounded state-feedback controller in the plant's raw units.

    Parameters
    ----------
    n_x, n_u : state and action dimensions.
    hidden : widths of the hidden layers.
    activation : `relu`, `tanh` or `groupsort`.
    layer : `frobenius` (paper 000), `spectral`, `orthogonal` or `plain`.
    gains : per-layer gains `g_l` (len(hidden) + 1 values; a scalar is repeated).
    state_offset, state_scale : input scaling `z = (x − offset) / scale`.
    action_offset, action_scale : output scaling `v = offset + scale ⊙ y`.
    u_low, u_high : actuator limits (None: unlimited).
    saturation : `tanh` (smooth), `clip` (hard) or `none`; ignored without limits.
    periodic : indices of 2π-periodic states (angles), seen through sin/cos features (module docstring).
    centered : anchor the output at the equilibrium, `u(state_offset) = action_offset` exactly (module docstring).
    """

    def __init__(self, n_x: int, n_u: int, hidden=(64, 64), activation: str = "relu",
                 layer: str = "frobenius", gains=1.0, bias: bool = True,
                 state_offset=None, state_scale=None, action_offset=None, action_scale=None,
                 u_low=None, u_high=None, saturation: str = "tanh", periodic=(), centered: bool = False):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise LipnetValue(f"unknown activation {activation!r}; valid: {', '.join(ACTIVATIONS)}")
        if layer not in LAYER_KINDS:
            raise LipnetValue(f"unknown layer kind {layer!r}; valid: {', '.join(LAYER_KINDS)}")
        if saturation not in SATURATIONS:
            raise LipnetValue(f"unknown saturation {saturation!r}; valid: {', '.join(SATURATIONS)}")
        hidden = tuple(int(h) for h in hidden)
        if int(n_x) < 1 or int(n_u) < 1 or any(h < 1 for h in hidden):
            raise LipnetDimension(f"a controller needs n_x, n_u and every hidden width >= 1; got n_x={n_x}, "
                                  f"n_u={n_u}, hidden={hidden}")
        if activation == "groupsort" and any(h % 2 for h in hidden):
            raise LipnetDimension(f"groupsort needs even hidden widths, got {hidden}")
        self.n_x, self.n_u = int(n_x), int(n_u)
        self.hidden, self.activation, self.layer_kind = hidden, activation, layer
        self.saturation, self.use_bias = saturation, bool(bias)
        # Set by training only (never saved): a hard clip passes gradients straight through (see `saturate`).
        self.straight_through = False
        # A plain tuple, not a buffer: state_dicts of controllers without periodic states stay loadable.
        self.periodic = _periodic(periodic, self.n_x)
        # Not persistent: state_dicts stay as they were; it moves with the module (.to(device)).
        self.register_buffer("_periodic_index", torch.tensor(self.periodic, dtype=torch.long), persistent=False)
        widths = (self.n_features, *hidden, self.n_u)
        depth = len(widths) - 1
        gains = [float(gains)] * depth if np.isscalar(gains) else [float(g) for g in gains]
        if len(gains) != depth:
            raise LipnetDimension(f"{len(gains)} gains given for {depth} layers")
        self.layers = nn.ModuleList(make_linear(layer, widths[i], widths[i + 1], gains[i], bias)
                                    for i in range(depth))
        self.act = make_activation(activation)
        self.register_buffer("state_offset", _vec(state_offset, n_x, "state_offset", 0.0).float())
        self.register_buffer("state_scale", _vec(state_scale, n_x, "state_scale", 1.0).float())
        self.register_buffer("action_offset", _vec(action_offset, n_u, "action_offset", 0.0).float())
        self.register_buffer("action_scale", _vec(action_scale, n_u, "action_scale", 1.0).float())
        if (self.state_scale <= 0).any() or (self.action_scale <= 0).any():
            raise LipnetValue("state_scale and action_scale must be positive")
        self.has_limits = u_low is not None or u_high is not None
        self.register_buffer("u_low", _vec(u_low, n_u, "u_low", -np.inf).float())
        self.register_buffer("u_high", _vec(u_high, n_u, "u_high", np.inf).float())
        if (self.u_low >= self.u_high).any():
            raise LipnetValue(f"u_low must be below u_high, got {self.u_low.tolist()} / {self.u_high.tolist()}")
        self.centered = bool(centered)
        if self.centered:
            lo, hi, u0 = self.u_low.double(), self.u_high.double(), self.action_offset.double()
            if self.has_limits and self.saturation != "none" and ((u0 <= lo) | (u0 >= hi)).any():
                raise LipnetValue(f"a centered controller needs action_offset {u0.tolist()} strictly inside the "
                                 f"actuator limits [{lo.tolist()}, {hi.tolist()}]")

    # --- forward -------------------------------------------------------------------------------------
    @property
    def n_features(self) -> int:
        """Inputs of the first layer: n_x plus one cosine feature per periodic state."""
        return self.n_x + len(self.periodic)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The scaled features `z` the first layer takes (module docstring); `(x − offset)/scale` without periodic."""
        d = x - self.state_offset.to(x.dtype)
        s = self.state_scale.to(x.dtype)
        if not self.periodic:
            return d / s
        idx = self._periodic_index.to(x.device)
        dp = d.index_select(-1, idx)
        # index_copy rather than a where over sin(d): no sin of (possibly huge) non-periodic states, no NaN grads.
        z = d.index_copy(-1, idx, torch.sin(dp)) / s
        return torch.cat([z, (torch.cos(dp) - 1) / s.index_select(0, idx)], dim=-1)

    def network(self, z: torch.Tensor) -> torch.Tensor:
        """The normalised MLP on the scaled features `z` (`features`)."""
        for i, lin in enumerate(self.layers):
            z = lin(z)
            if i < len(self.layers) - 1:
                z = self.act(z)
        return z

    def saturate(self, v: torch.Tensor) -> torch.Tensor:
        """Actuator saturation (1-Lipschitz per channel)."""
        if not self.has_limits or self.saturation == "none":
            return v
        lo, hi = self.u_low.to(v.dtype), self.u_high.to(v.dtype)
        if self.saturation == "clip":
            clipped = torch.clamp(v, lo, hi)
            if self.straight_through and torch.is_grad_enabled():
                # Training surrogate: the value is the hard clip (what is exported and evaluated), the gradient
                # that of the identity, so a saturated action still learns which way it should move.
                return v + (clipped - v).detach()
            return clipped
        finite = torch.isfinite(lo) & torch.isfinite(hi)
        # Smooth saturation around the centre of a two-sided range; one-sided limits are clipped.
        centre = torch.where(finite, (lo + hi) / 2, torch.zeros_like(lo))
        half = torch.where(finite, (hi - lo) / 2, torch.ones_like(lo))
        smooth = centre + half * torch.tanh((v - centre) / half)
        if bool(finite.all()):
            return smooth
        return torch.where(finite, smooth, torch.clamp(v, lo, hi))

    def _presaturation(self, u: torch.Tensor) -> torch.Tensor:
        """`sat⁻¹(u)` for `u` strictly inside the limits (u itself for a clip, no saturation or no limits)."""
        if not self.has_limits or self.saturation != "tanh":
            return u.clone()
        lo, hi = self.u_low.to(u.dtype), self.u_high.to(u.dtype)
        finite = torch.isfinite(lo) & torch.isfinite(hi)
        centre = torch.where(finite, (lo + hi) / 2, torch.zeros_like(lo))
        half = torch.where(finite, (hi - lo) / 2, torch.ones_like(lo))
        inside = torch.clamp((u - centre) / half, -1 + 1e-12, 1 - 1e-12)
        return torch.where(finite, centre + half * torch.atanh(inside), u)

    def output_anchor(self, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """`(v0, y0)` with `v = v0 + action_scale ⊙ (y − y0)`: `(action_offset, 0)`, or `(v_eq, y(0))` if centered."""
        if not self.centered:
            return self.action_offset.to(dtype), torch.zeros(self.n_u, dtype=dtype, device=self.u_low.device)
        zero = torch.zeros(1, self.n_features, dtype=dtype, device=self.u_low.device)
        with torch.autocast("cpu", enabled=False):
            y0 = self.network(zero.to(self.layers[0].weight.dtype)).to(dtype)[0]
        return self._presaturation(self.action_offset.double()).to(dtype), y0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.n_x:
            raise LipnetDimension(f"controller expects states of dimension {self.n_x}, got shape {tuple(x.shape)}")
        y = self.network(self.features(x))
        if self.centered:
            v0, y0 = self.output_anchor(x.dtype)
            y = y - y0
            v = torch.addcmul(v0, self.action_scale.to(x.dtype), y)
        else:
            v = torch.addcmul(self.action_offset.to(x.dtype), self.action_scale.to(x.dtype), y)
        return self.saturate(v)

    # --- bounds and views ----------------------------------------------------------------------------
    def network_lipschitz_bound(self) -> float:
        """Π_l Lip(W_l): the construction bound of the MLP on scaled input features."""
        return float(np.prod([lin.lipschitz() for lin in self.layers]))

    def lipschitz_bound(self) -> float:
        """Certified-by-construction ℓ2 Lipschitz bound from raw state to actuator command.

        Holds with periodic states too: the feature map is `1/min(state_scale)`-Lipschitz (module docstring).
        """
        a = float(self.action_scale.double().max())
        s = float(self.state_scale.double().min())
        return a * self.network_lipschitz_bound() / s

    def periodic_center(self) -> np.ndarray:
        """The centres `o_p` (float64) of the periodic states, in the order of `periodic`."""
        return self.state_offset.double().cpu().numpy()[list(self.periodic)]

    @torch.no_grad()
    def folded_weights(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Plain float64 `(W, b)` per layer with input and output scalings folded in.

        The controller is then `sat(W_D σ(⋯ σ(W_1 f(x) + b_1)) + b_D)` in raw units: what certification,
        export and the numpy reference all use. `f(x) = x` without periodic states; with them,
        `f(x) = [x_i, or sin(x_i − o_i) for periodic i] ++ [cos(x_p − o_p) − 1 for p in periodic]` (the offsets
        of periodic states stay inside sin/cos, the others are folded into the first bias).
        """
        out = []
        for lin in self.layers:
            w = lin.weight.detach().double().cpu().numpy().copy()
            b = (lin.bias.detach().double().cpu().numpy().copy() if lin.bias is not None
                 else np.zeros(w.shape[0]))
            out.append((w, b))
        raw = list(out)
        p = list(self.periodic)
        s = self.state_scale.double().cpu().numpy()
        s = np.concatenate([s, s[p]])  # the scale of each first-layer column
        x0 = self.state_offset.double().cpu().numpy().copy()
        x0[p] = 0.0
        x0 = np.concatenate([x0, np.zeros(len(p))])  # offsets of linear columns only
        w0, b0 = out[0]
        w0 = w0 / s[None, :]
        out[0] = (w0, b0 - w0 @ x0)
        a = self.action_scale.double().cpu().numpy()
        u0 = self.action_offset.double().cpu().numpy()
        wl, bl = out[-1]
        if self.centered:  # v = v_eq + a ⊙ (y − y(0)), y(0) in float64 from the unscaled layers
            h = np.zeros((1, self.n_features))
            for i, (w, b) in enumerate(raw):
                h = h @ w.T + b
                if i < len(raw) - 1:
                    h = self.act(torch.from_numpy(h)).numpy()
            h = h[0]
            u0 = self._presaturation(self.action_offset.double()).cpu().numpy() - a * h
        out[-1] = (a[:, None] * wl, a * bl + u0)
        return out

    def limits(self) -> tuple[np.ndarray, np.ndarray]:
        """Actuator limits as float64 arrays (±inf where unlimited)."""
        return self.u_low.double().cpu().numpy(), self.u_high.double().cpu().numpy()

    # --- (de)serialisation ---------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """Architecture and scalings as plain Python values (enough to rebuild with `from_config`)."""
        lo, hi = self.limits()
        return {
            "n_x": self.n_x, "n_u": self.n_u, "hidden": list(self.hidden), "activation": self.activation,
            "layer": self.layer_kind, "gains": [float(lin.gain) for lin in self.layers], "bias": self.use_bias,
            "state_offset": self.state_offset.tolist(), "state_scale": self.state_scale.tolist(),
            "action_offset": self.action_offset.tolist(), "action_scale": self.action_scale.tolist(),
            "u_low": [float(v) for v in lo] if self.has_limits else None,
            "u_high": [float(v) for v in hi] if self.has_limits else None,
            "saturation": self.saturation, "periodic": list(self.periodic),
        } | ({"centered": True} if self.centered else {})  # absent when False: older readers still load it

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> Controller:
        """Rebuild an (untrained) controller from `config()` (configs from before `periodic` included)."""
        return cls(**cfg)
