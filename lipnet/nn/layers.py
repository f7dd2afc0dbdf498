"""Linear layers whose Lipschitz constant is known: Frobenius-normalised, spectral, orthogonal, plain.

Each layer carries what optimisers and the rescaling need to know about it (as modula's modules carry their own
norm and sensitivity): its `kind`, its `free_weight` (the parameter the weight is computed from) and the manifold
that parameter lives on, whether the architecture-aware optimisers may step it directly (`layerwise`), its bound
as a function of an effective weight (`lipschitz_of`) and how to hold a given effective weight (`set_weight`).

Biases are Euclidean parameters in every layer: a constant shift changes no Lipschitz constant, so
they enter no bound, and every optimiser updates them as plain vectors.
"""

from __future__ import annotations

import abc
import math

import numpy as np
import torch
from torch import nn

from lipnet.exceptions import LipnetValue
from lipnet.manifolds import Euclidean, Manifold, ManifoldParameter, Sphere, Stiefel

__all__ = ["LipschitzLinear", "FrobeniusLinear", "SpectralLinear", "OrthogonalLinear", "PlainLinear",
           "make_linear", "LAYER_KINDS"]


class LipschitzLinear(nn.Module, metaclass=abc.ABCMeta):
    """Base: `y = W x + b` with `weight` derived from free parameters and a `lipschitz()` bound on ‖W‖₂."""

    in_features: int
    out_features: int
    #: the name `make_linear` builds it by (`LAYER_KINDS`)
    kind: str
    #: the manifold class of `free_weight` (an optimiser must keep the parameter on it)
    free_manifold: type[Manifold] = Euclidean
    #: AGD and sphere-mm step `free_weight` directly: `W = g·V` with V on the unit sphere, or `W` itself
    layerwise: bool = False

    def __init__(self, in_features: int, out_features: int, gain: float, bias: bool):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.register_buffer("gain", torch.tensor(float(gain)))
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_features))
        else:
            self.register_parameter("bias", None)

    @property
    @abc.abstractmethod
    def weight(self) -> torch.Tensor:
        """The effective weight matrix `W` (out × in)."""

    @property
    @abc.abstractmethod
    def free_weight(self) -> nn.Parameter:
        """The parameter `weight` is computed from: what an optimiser moves (on `free_manifold`)."""

    def lipschitz_of(self, w: np.ndarray) -> float:
        """The construction's bound on ‖w‖₂ were the layer to hold the effective weight `w` (float64, out × in),
        before the rounding margin `lipschitz()` adds: ‖w‖₂ itself unless the construction bounds it otherwise."""
        return float(np.linalg.norm(w, 2))

    @abc.abstractmethod
    def _hold(self, w: np.ndarray) -> None:
        """Re-express the effective weight `w` in the free weight and the gain (under no_grad)."""

    @torch.no_grad()
    def set_weight(self, w: np.ndarray, bias: np.ndarray | None = None) -> None:
        """Hold the effective weight `w` (float64, out × in) and, when given, the bias: the layer then computes
        `w x + bias` to rounding. An orthogonal layer can only hold a multiple of its weight (its gain moves)."""
        if bias is not None and self.bias is not None:
            self.bias.copy_(torch.as_tensor(bias, dtype=self.bias.dtype, device=self.bias.device))
        self._hold(np.asarray(w, dtype=np.float64))

    def lipschitz(self) -> float:
        """A sound upper bound on ‖W‖₂ of the weight as computed in floating point (`g`, inflated for rounding)."""
        return float(self.gain) * (1.0 + self.rounding_margin())

    def rounding_margin(self) -> float:
        """Relative amount by which rounding can make the computed ‖W‖₂ exceed `g`.

        `W = g·V/‖V‖` in precision u: the norm's sum of n squares is off by at most γ_n ≈ n·u relative (any
        summation order), its square root by u, each entry's product and quotient by 2u, so ‖Ŵ‖ ≤ g(1 + (n/2+5)u);
        (n + 10)·u leaves room for an SVD's backward error of the same order (SpectralLinear).
        """
        u = float(torch.finfo(self.gain.dtype).eps) / 2
        return (self.in_features * self.out_features + 10) * u

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, gain={float(self.gain):.4g}"


class FrobeniusLinear(LipschitzLinear):
    """`W = g · V / ‖V‖_F` with `V` on the unit sphere (paper 000): ‖W‖₂ ≤ ‖W‖_F = g.

    Dividing by ‖V‖_F in the forward pass keeps the bound true under any optimiser (Adam, SGD);
    the sphere optimisers keep ‖V‖_F = 1 so that the division is the identity for them.
    """

    kind, free_manifold, layerwise = "frobenius", Sphere, True

    def __init__(self, in_features: int, out_features: int, gain: float = 1.0, bias: bool = True):
        super().__init__(in_features, out_features, gain, bias)
        v = torch.empty(out_features, in_features)
        nn.init.orthogonal_(v)
        self.direction = ManifoldParameter(v, Sphere())

    @property
    def weight(self):
        return self.gain * self.direction / self.direction.norm()

    @property
    def free_weight(self):
        return self.direction

    def lipschitz_of(self, w):
        return float(np.linalg.norm(w))

    def _hold(self, w):
        norm = float(np.linalg.norm(w))
        self.direction.copy_(torch.as_tensor(w / norm, dtype=self.direction.dtype, device=self.direction.device))
        self.gain.copy_(torch.tensor(norm, dtype=self.gain.dtype, device=self.gain.device))


class SpectralLinear(LipschitzLinear):
    """`W = g · V / σ_max(V)` with σ_max computed exactly (SVD): ‖W‖₂ = g."""

    kind = "spectral"

    def __init__(self, in_features: int, out_features: int, gain: float = 1.0, bias: bool = True):
        super().__init__(in_features, out_features, gain, bias)
        v = torch.empty(out_features, in_features)
        nn.init.orthogonal_(v)
        self.raw_weight = nn.Parameter(v)

    @property
    def weight(self):
        return self.gain * self.raw_weight / torch.linalg.matrix_norm(self.raw_weight, ord=2)

    @property
    def free_weight(self):
        return self.raw_weight

    def _hold(self, w):
        v = torch.as_tensor(w, dtype=self.raw_weight.dtype, device=self.raw_weight.device)
        self.raw_weight.copy_(v)
        # The forward divides by the same σ_max computation, so W is reproduced to rounding.
        self.gain.copy_(torch.linalg.matrix_norm(v, ord=2).to(self.gain.dtype))


class OrthogonalLinear(LipschitzLinear):
    """`W = g · Y` (or `g · Yᵀ` when wide) with `Y` on the Stiefel manifold: ‖W‖₂ = g exactly."""

    kind, free_manifold = "orthogonal", Stiefel

    def __init__(self, in_features: int, out_features: int, gain: float = 1.0, bias: bool = True):
        super().__init__(in_features, out_features, gain, bias)
        big, small = max(in_features, out_features), min(in_features, out_features)
        y = torch.empty(big, small)
        nn.init.orthogonal_(y)
        self.frame = ManifoldParameter(y, Stiefel())
        self.transposed = out_features < in_features

    @property
    def weight(self):
        y = self.frame.transpose(0, 1) if self.transposed else self.frame
        return self.gain * y

    @property
    def free_weight(self):
        return self.frame

    def _scale_to(self, w) -> float:
        """`c` with `w = c·W`: the only weights an orthogonal layer can hold are multiples of its own."""
        return float(np.linalg.norm(w) / np.linalg.norm(self.weight.detach().double().cpu().numpy()))

    def lipschitz_of(self, w):
        return self.lipschitz() * self._scale_to(w)

    def _hold(self, w):
        self.gain.mul_(self._scale_to(w))

    def lipschitz(self) -> float:
        # ‖Y‖₂ = sqrt(‖YᵀY‖₂): sound even if the frame drifted off the manifold; W = fl(g·Y) adds one rounding,
        # the float64 eigenvalue a relative error far below 1e-12.
        y = self.frame.detach().double()
        norm = math.sqrt(float(torch.linalg.matrix_norm(y.T @ y, ord=2)))
        return float(self.gain) * norm * (1.0 + float(torch.finfo(self.frame.dtype).eps) + 1e-12)


class PlainLinear(LipschitzLinear):
    """An unconstrained weight (for AGD as published and for baselines); bound = its exact ‖W‖₂."""

    kind, layerwise = "plain", True

    def __init__(self, in_features: int, out_features: int, gain: float = 1.0, bias: bool = True):
        super().__init__(in_features, out_features, gain, bias)
        v = torch.empty(out_features, in_features)
        nn.init.orthogonal_(v)
        # AGD's initialisation: orthogonal scaled so that singular values are sqrt(out/in) · gain.
        self.raw_weight = nn.Parameter(v * math.sqrt(out_features / in_features) * float(gain))

    @property
    def weight(self):
        return self.raw_weight

    @property
    def free_weight(self):
        return self.raw_weight

    def _hold(self, w):
        self.raw_weight.copy_(torch.as_tensor(w, dtype=self.raw_weight.dtype, device=self.raw_weight.device))

    def lipschitz(self) -> float:
        # The weight is used as stored: only the float64 SVD's relative error (~1e-13 here) needs a margin.
        return float(torch.linalg.matrix_norm(self.raw_weight.detach().double(), ord=2)) * (1.0 + 1e-9)


LAYER_KINDS = {cls.kind: cls for cls in (FrobeniusLinear, SpectralLinear, OrthogonalLinear, PlainLinear)}


def make_linear(kind: str, in_features: int, out_features: int, gain: float, bias: bool = True):
    """Build a layer of the named kind (`frobenius`, `spectral`, `orthogonal`, `plain`)."""
    try:
        cls = LAYER_KINDS[kind]
    except KeyError:
        raise LipnetValue(f"unknown layer kind {kind!r}; valid: {', '.join(LAYER_KINDS)}") from None
    return cls(in_features, out_features, gain=gain, bias=bias)
