"""Manifolds of constrained weights: sphere, Stiefel, Grassmann, Euclidean; the global tangent space (paper 001)."""

from .base import Euclidean, Manifold, ManifoldParameter, manifold_of
from .grassmann import Grassmann, subspace_distance
from .sphere import Sphere
from .stiefel import Stiefel

__all__ = ["Manifold", "Euclidean", "ManifoldParameter", "manifold_of", "Sphere", "Stiefel", "Grassmann",
           "subspace_distance"]
