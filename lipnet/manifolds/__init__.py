"""Manifolds of constrained weights: sphere, Stiefel, Euclidean."""

from .base import Euclidean, Manifold, ManifoldParameter, manifold_of
from .sphere import Sphere
from .stiefel import Stiefel

__all__ = ["Manifold", "Euclidean", "ManifoldParameter", "manifold_of", "Sphere", "Stiefel"]
