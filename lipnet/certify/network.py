"""The controller as plain float64 data: input features, folded weights, activation, saturation; its weight hash.

Certification never touches torch parameters directly: it reads `Controller.folded_weights()` once, so every
bound and the hash refer to exactly the same numbers.

Periodic states (angles) reach the first layer as raw features `f(x)` (`input_features`): `x_i` as is, or
`sin(x_i − c_i)` for a periodic i, then `cos(x_p − c_p) − 1` per periodic p. f is 1-Lipschitz (per periodic
coordinate, `d ↦ (sin d, cos d − 1)` is the unit circle at unit speed: a chord is never longer than its arc), so
any Lipschitz upper bound of the MLP on its feature inputs bounds the controller on raw states as well.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from lipnet.exceptions import LipnetArgument, LipnetDimension

__all__ = ["MLP", "mlp_of", "network_hash", "activation_slope", "input_features"]


def activation_slope(name: str) -> tuple[float, float] | None:
    """Slope interval `(α, β)` of an elementwise activation, or None when it is not slope-restricted."""
    from lipnet.nn import SLOPE_RESTRICTED

    return SLOPE_RESTRICTED.get(name)


def input_features(x, periodic=(), center=None):
    """Raw features `f(x)` (last axis): x with `sin(x_p − c_p)` at periodic p, then `cos(x_p − c_p) − 1`.

    `x` a torch tensor (its dtype kept), or anything else as float64 numpy (a numpy array comes back).
    """
    if not isinstance(x, torch.Tensor):
        return input_features(torch.as_tensor(np.asarray(x, dtype=np.float64)), periodic, center).numpy()
    if not len(periodic):
        return x
    idx = torch.as_tensor(list(periodic), dtype=torch.long, device=x.device)
    d = x.index_select(-1, idx) - torch.as_tensor(np.asarray(center, dtype=np.float64), dtype=x.dtype, device=x.device)
    return torch.cat([x.index_copy(-1, idx, torch.sin(d)), torch.cos(d) - 1], dim=-1)


@dataclass
class MLP:
    """`u = sat(W_D σ(⋯σ(W_1 f(x) + b_1)⋯) + b_D)` in raw units, float64.

    `weights` and `biases` per layer; `activation` by name; `u_low`/`u_high` (±inf where unlimited) and
    `saturation` (`tanh`, `clip`, `none`) describe the 1-Lipschitz output stage. `periodic` (state indices) and
    `periodic_center` (their centres c_p) describe the input features f (`input_features`; f(x) = x without).
    """

    weights: list[np.ndarray]
    biases: list[np.ndarray]
    activation: str = "relu"
    u_low: np.ndarray | None = None
    u_high: np.ndarray | None = None
    saturation: str = "none"
    periodic: tuple[int, ...] = ()
    periodic_center: np.ndarray | None = None

    def __post_init__(self):
        if not self.weights:
            raise LipnetDimension("an MLP needs at least one layer")
        self.weights = [np.asarray(w, dtype=np.float64) for w in self.weights]
        if not self.biases:
            self.biases = [np.zeros(w.shape[0]) for w in self.weights]
        self.biases = [np.asarray(b, dtype=np.float64).reshape(-1) for b in self.biases]
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            if w.ndim != 2 or b.shape[0] != w.shape[0]:
                raise LipnetDimension(f"layer {i}: weight {w.shape} and bias {b.shape} do not fit")
            if i and w.shape[1] != self.weights[i - 1].shape[0]:
                raise LipnetDimension(f"layer {i} takes {w.shape[1]} inputs but layer {i - 1} gives "
                                      f"{self.weights[i - 1].shape[0]}")
            if not (np.isfinite(w).all() and np.isfinite(b).all()):
                raise LipnetDimension(f"layer {i} has non-finite weights or biases")
        self._check_features()

    def _check_features(self) -> None:
        self.periodic = tuple(int(p) for p in self.periodic)
        n_p = len(self.periodic)
        center = np.zeros(n_p) if self.periodic_center is None else self.periodic_center
        self.periodic_center = np.asarray(center, dtype=np.float64).reshape(-1)
        n_x = self.n_in
        if n_x < 1 or len(set(self.periodic)) != n_p or any(not 0 <= p < n_x for p in self.periodic):
            raise LipnetDimension(f"periodic indices {list(self.periodic)} do not fit a first layer of "
                                  f"{self.n_features} features (n_x + one per periodic state)")
        if self.periodic_center.shape != (n_p,) or not np.isfinite(self.periodic_center).all():
            raise LipnetDimension(f"periodic_center needs {n_p} finite values, got {self.periodic_center.tolist()}")

    @property
    def n_in(self) -> int:
        """The raw state dimension n_x (the first layer takes `n_features`)."""
        return self.weights[0].shape[1] - len(self.periodic)

    @property
    def n_features(self) -> int:
        """Inputs of the first layer: n_x plus one cosine feature per periodic state."""
        return self.weights[0].shape[1]

    def features(self, x):
        """The raw features `f(x)` the first layer takes (`input_features`; x itself without periodic states)."""
        return input_features(x, self.periodic, self.periodic_center)

    @property
    def n_out(self) -> int:
        return self.weights[-1].shape[0]

    @property
    def hidden(self) -> list[int]:
        return [w.shape[0] for w in self.weights[:-1]]

    @property
    def saturated(self) -> bool:
        """True when an output saturation is applied (limits present and saturation not `none`)."""
        if self.saturation == "none" or self.u_low is None or self.u_high is None:
            return False
        return bool(np.isfinite(self.u_low).any() or np.isfinite(self.u_high).any())


def mlp_of(controller_or_mlp) -> MLP:
    """An `MLP` from a `Controller` (via `folded_weights()`), or the `MLP` itself."""
    if isinstance(controller_or_mlp, MLP):
        return controller_or_mlp
    if not hasattr(controller_or_mlp, "folded_weights"):
        raise LipnetArgument(f"expected a lipnet Controller or an MLP, got {type(controller_or_mlp).__name__}")
    c = controller_or_mlp
    pairs = c.folded_weights()
    lo, hi = c.limits()
    periodic = tuple(getattr(c, "periodic", ()))
    return MLP([w for w, _ in pairs], [b for _, b in pairs], activation=c.activation,
               u_low=lo if c.has_limits else None, u_high=hi if c.has_limits else None,
               saturation=c.saturation if c.has_limits else "none", periodic=periodic,
               periodic_center=c.periodic_center() if periodic else None)


def network_hash(controller_or_mlp) -> str:
    """`sha256:` of the folded float64 weights, biases, limits, activation, saturation and periodic features.

    Without periodic states the bytes hashed are those of lipnet before periodic features (old certificates
    keep their hash).
    """
    net = mlp_of(controller_or_mlp)
    h = hashlib.sha256()
    h.update(f"lipnet-mlp/1|{net.activation}|{net.saturation}|".encode())
    if net.periodic:
        h.update(b"periodic|" + np.asarray(net.periodic, dtype="<i8").tobytes())
        h.update(np.ascontiguousarray(net.periodic_center, dtype="<f8").tobytes())
    for w, b in zip(net.weights, net.biases, strict=True):
        h.update(np.asarray(w.shape, dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(w, dtype="<f8").tobytes())
        h.update(np.ascontiguousarray(b, dtype="<f8").tobytes())
    for lim in (net.u_low, net.u_high):
        h.update(b"none" if lim is None else np.ascontiguousarray(lim, dtype="<f8").tobytes())
    return "sha256:" + h.hexdigest()
