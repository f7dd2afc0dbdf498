"""The Stiefel manifold St(n, N) = {Y ∈ R^{N×n}: YᵀY = I} (orthogonal layers)."""

from __future__ import annotations

import torch

from .base import Manifold

__all__ = ["Stiefel"]


class Stiefel(Manifold):
    """Orthonormal frames: tall matrices `Y` (N ≥ n) with `YᵀY = I`."""

    name = "stiefel"

    def projx(self, x):
        u, _, vh = torch.linalg.svd(x, full_matrices=False)
        return u @ vh

    def proju(self, x, u):
        xtu = x.transpose(-1, -2) @ u
        return u - x @ (xtu + xtu.transpose(-1, -2)) / 2

    def retr(self, x, u):
        q, r = torch.linalg.qr(x + u)
        return q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)

    def distance_to_manifold(self, x):
        x = x.detach().double()
        eye = torch.eye(x.shape[-1], dtype=x.dtype)
        return float(torch.linalg.matrix_norm(x.transpose(-1, -2) @ x - eye))
