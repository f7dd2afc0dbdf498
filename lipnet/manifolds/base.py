"""Base class of manifolds and the parameter type that carries its manifold (geoopt's split)."""

from __future__ import annotations

import abc

import torch

__all__ = ["Manifold", "Euclidean", "ManifoldParameter"]


class Manifold(abc.ABC):
    """A constraint set for a parameter: projection, tangent projection, retraction and checks.

    What optimisers ask of it beyond the maps: `flat` (a vector space: stepped as a plain vector) and, for the
    homogeneous spaces of paper 001 (sphere, Stiefel, Grassmann), `frame` (a point as an N×n orthonormal frame),
    `grassmann` (only its span matters) and `householder` (one-column frames: the O(N) Householder section).
    """

    name = "manifold"
    #: a vector space: optimisers step it as a plain vector
    flat = False
    #: the point is a subspace (the A block of the global tangent space is zero)
    grassmann = False
    #: a point is one unit vector, so the O(N) Householder section of `global_tangent` applies
    householder = False

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

    def frame(self, x: torch.Tensor) -> torch.Tensor:
        """`x` as an N×n orthonormal frame (N ≥ n), the view in which paper 001 steps in the global tangent space.

        Raises TypeError for a manifold that is not such a homogeneous space.
        """
        raise TypeError(f"{self!r} has no global tangent space (it is not a sphere, Stiefel or Grassmann manifold)")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Euclidean(Manifold):
    """Unconstrained parameters: the trivial manifold."""

    name = "euclidean"
    flat = True

    def projx(self, x):
        return x

    def proju(self, x, u):
        return u

    def retr(self, x, u):
        return x + u

    def expmap(self, x, u):
        """The straight line: the exponential map of flat space."""
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
