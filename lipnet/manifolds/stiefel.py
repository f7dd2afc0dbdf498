"""The Stiefel manifold St(n, N) = {Y ∈ R^{N×n}: YᵀY = I} (orthogonal layers) and its global tangent space."""

from __future__ import annotations

import torch

from . import global_tangent as gt
from .base import Manifold

__all__ = ["Stiefel"]


class Stiefel(Manifold):
    """Orthonormal frames: tall matrices `Y` (N ≥ n) with `YᵀY = I`.

    Besides the embedded-metric operations (`proju`, `retr`), it offers the homogeneous-space view of
    paper 001: `section(Y)` (λ ∈ O(N) with λE = Y), `lift(λ, ∇)` into `g^hor` (packed `[A; B]`),
    `tangent(λ, [A; B])` back to a tangent vector, and `move(λ, [A; B])` (λ · Retr(U), through a 2n×2n problem).
    """

    name = "stiefel"
    #: the A block of g^hor is free (Stiefel) rather than zero (Grassmann)
    grassmann = False

    def projx(self, x):
        u, _, vh = torch.linalg.svd(x, full_matrices=False)
        return u @ vh

    def frame(self, x):
        """`x` itself, checked to be a tall N×n matrix (N ≥ n)."""
        if x.dim() != 2 or x.shape[0] < x.shape[1]:
            raise ValueError(f"a {self.name} parameter must be a tall N×n frame (N ≥ n), got shape {tuple(x.shape)}; "
                             "store the transpose (as OrthogonalLinear does with `transposed`)")
        return x

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

    # --- canonical metric and global tangent space (paper 001) -------------------------------------

    def rgrad_canonical(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Riemannian gradient for the canonical metric, `∇ − Y ∇ᵀ Y`."""
        return g - x @ (g.transpose(-1, -2) @ x)

    def horizontal_lift(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The skew N×N `Ω(Y, Δ) = (I − ½YYᵀ) Δ Yᵀ − Y Δᵀ (I − ½YYᵀ)` of a tangent vector (dense; for checks)."""
        p = torch.eye(x.shape[0], dtype=x.dtype, device=x.device) - 0.5 * x @ x.transpose(0, 1)
        return p @ v @ x.transpose(0, 1) - x @ v.transpose(0, 1) @ p

    def section(self, x: torch.Tensor, hint: torch.Tensor | None = None) -> torch.Tensor:
        """Global section `λ(Y) ∈ O(N)`, `λ E = Y` (see `global_tangent.global_section`)."""
        return gt.global_section(x, hint)

    def lift(self, section: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Packed `[A; B] ∈ g^hor` of the Riemannian gradient of a Euclidean gradient `g` at `λE`."""
        return gt.lift(section, g, grassmann=self.grassmann)

    def tangent(self, section: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
        """Tangent vector `λ U E` at `λE` represented by packed `[A; B]`."""
        return gt.tangent_of(section, packed)

    def move(self, section: torch.Tensor, packed: torch.Tensor, method: str = "cayley") -> torch.Tensor:
        """Carried section `λ · Retr(U)` (`method` `cayley` or `exp`); the new point is its first n columns."""
        return gt.move_section(section, packed, method)

    def expmap(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Geodesic of the canonical metric from `x` along tangent `v` (through the global tangent space)."""
        lam = self.section(x)
        return self.move(lam, lam.transpose(0, 1) @ v, "exp")[:, : x.shape[1]]
