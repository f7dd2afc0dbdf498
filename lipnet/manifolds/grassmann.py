"""The Grassmann manifold Gr(n, N) of n-dimensional subspaces of R^N, represented by orthonormal frames."""

from __future__ import annotations

import torch

from .stiefel import Stiefel

__all__ = ["Grassmann", "subspace_distance"]


class Grassmann(Stiefel):
    """Subspaces `span(Y)`, stored as a frame `Y ∈ St(n, N)`; a loss on it must satisfy `f(YR) = f(Y)`, R ∈ O(n).

    The horizontal space at Y is `{Δ : YᵀΔ = 0}`, so in `g^hor` the A block is zero and only B is kept.
    """

    name = "grassmann"
    grassmann = True

    def proju(self, x, u):
        return u - x @ (x.transpose(-1, -2) @ u)

    def rgrad_canonical(self, x, g):
        """Riemannian gradient `(I − YYᵀ) ∇` (the horizontal part)."""
        return self.proju(x, g)


def subspace_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """‖XXᵀ − YYᵀ‖_F / √2: zero exactly when two frames span the same subspace (chordal distance)."""
    x, y = x.detach().double(), y.detach().double()
    return float(torch.linalg.matrix_norm(x @ x.transpose(-1, -2) - y @ y.transpose(-1, -2))) / 2 ** 0.5
