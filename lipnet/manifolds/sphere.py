"""The unit sphere in Frobenius norm: the constraint of a normalised layer's direction (paper 000)."""

from __future__ import annotations

import torch

from .base import Manifold

__all__ = ["Sphere"]


class Sphere(Manifold):
    """Unit sphere `{V : ‖V‖_F = 1}` of a whole tensor (one sphere per layer)."""

    name = "sphere"

    def projx(self, x):
        return x / x.norm()

    def proju(self, x, u):
        return u - (u * x).sum() * x

    def retr(self, x, u):
        return self.expmap(x, u)

    def expmap(self, x, u):
        """Exponential map `cos‖u‖ x + sin‖u‖ u/‖u‖`, safe as ‖u‖ → 0."""
        nu = u.norm()
        return torch.cos(nu) * x + torch.special.sinc(nu / torch.pi) * u

    def distance_to_manifold(self, x):
        return abs(float(x.detach().double().norm()) - 1.0)
