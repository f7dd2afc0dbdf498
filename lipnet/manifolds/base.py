"""Base class of manifolds and the parameter type that carries its manifold (geoopt's split)."""

from __future__ import annotations

import abc

import torch

__all__ = ["Manifold", "Euclidean", "ManifoldParameter"]


class Manifold(abc.ABC):
    """A constraint set for a parameter: projection, tangent projection, retraction and checks."""

    name = "manifold"

    @abc.abstractmethod
    def projx(self, x: torch.Tensor) -> torch.Tensor:
        """Nearest point of the manifold (used at initialisation and by explicit re-normalisation)."""

    @abc.abstractmethod
    def proju(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Projection of an ambient vector `u` onto the tangent space at `x`."""

    def egrad2rgrad(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Riemannian gradient from a Euclidean gradient (embedded metric unless stated)."""
        return self.proju(x, g)

    @abc.abstractmethod
    def retr(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Move from `x` along the tangent vector `u`."""

    @abc.abstractmethod
    def distance_to_manifold(self, x: torch.Tensor) -> float:
        """How far `x` is from satisfying the constraint (0 on the manifold)."""

    def check_point_on_manifold(self, x: torch.Tensor, atol: float = 1e-5, explain: bool = False):
        """True when `x` is on the manifold to `atol`; with `explain`, `(ok, reason)`."""
        err = self.distance_to_manifold(x)
        ok = err <= atol
        if explain:
            return ok, None if ok else f"{self.name}: constraint violated by {err:.3e} > atol {atol:.1e}"
        return ok

    def assert_check_point_on_manifold(self, x: torch.Tensor, atol: float = 1e-5) -> None:
        """Raise ValueError naming the violated constraint."""
        ok, reason = self.check_point_on_manifold(x, atol=atol, explain=True)
        if not ok:
            raise ValueError(reason)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Euclidean(Manifold):
    """Unconstrained parameters: the trivial manifold."""

    name = "euclidean"

    def projx(self, x):
        return x

    def proju(self, x, u):
        return u

    def retr(self, x, u):
        return x + u

    def distance_to_manifold(self, x):
        return 0.0


class ManifoldParameter(torch.nn.Parameter):
    """A `torch.nn.Parameter` that knows its manifold (`param.manifold`)."""

    def __new__(cls, data: torch.Tensor, manifold: Manifold | None = None, requires_grad: bool = True):
        manifold = manifold or Euclidean()
        data = manifold.projx(data.detach())
        obj = torch.nn.Parameter.__new__(cls, data, requires_grad)
        obj.manifold = manifold
        return obj

    def __deepcopy__(self, memo):
        result = type(self)(self.data.clone(memory_format=torch.preserve_format), self.manifold,
                            self.requires_grad)
        memo[id(self)] = result
        return result

    def __reduce_ex__(self, proto):
        return (_rebuild_manifold_parameter, (self.data, self.manifold, self.requires_grad))

    def __repr__(self):
        return f"ManifoldParameter on {self.manifold!r} containing:\n{super().__repr__()}"


def _rebuild_manifold_parameter(data, manifold, requires_grad):
    return ManifoldParameter(data, manifold, requires_grad)


def manifold_of(p: torch.Tensor) -> Manifold:
    """The manifold a parameter declares (Euclidean when it declares none)."""
    return getattr(p, "manifold", None) or Euclidean()


__all__.append("manifold_of")
