"""The unit sphere in Frobenius norm: the constraint of a normalised layer's direction (paper 000).

Two views of the same geometry (embedded metric, `⟨u, v⟩ = Σ u ⊙ v`):

* `Sphere(batch_dims=0)`: one tensor is one point (a layer's `direction`); with `batch_dims=k` the
  leading k dimensions index a batch of spheres of equal shape (layers stacked along dim 0).
* `SphereProduct(shapes)`: the product of spheres of *different* shapes, one per layer, acting on
  packed flat vectors, so that every operation is one batched call over all layers.

Every formula is written with `sinc` so that it is smooth and exact as ‖ξ‖ → 0 (no division by ‖ξ‖):

    Exp_x(u)        = cos‖u‖ x + sinc(‖u‖) u                           (sinc(a) = sin a / a)
    Γ_{x,u}(v)      = v − ⟨u, v⟩ (½ sinc²(‖u‖/2) u + sinc(‖u‖) x)       (parallel transport along t ↦ Exp_x(t u))
    Log_x(y)        = θ / sin θ · (y − ⟨x, y⟩ x),  θ = atan2(‖y − ⟨x, y⟩ x‖, ⟨x, y⟩)
"""

from __future__ import annotations

import math

import torch

from .base import Manifold

__all__ = ["Sphere", "SphereProduct", "sinc"]


def sinc(a: torch.Tensor) -> torch.Tensor:
    """`sin(a)/a`, equal to 1 at 0 and smooth there (torch's sinc is the normalised `sin(πx)/(πx)`)."""
    return torch.special.sinc(a / math.pi)


class Sphere(Manifold):
    """Unit sphere `{V : ‖V‖_F = 1}` of a whole tensor, or of each item of a batch.

    Parameters
    ----------
    batch_dims : number of leading dimensions that index independent spheres (0: the whole tensor
        is one point, as for a layer's `direction`; 1: a stack of layers of equal shape).
    """

    name = "sphere"
    householder = True

    def __init__(self, batch_dims: int = 0):
        if int(batch_dims) < 0:
            raise ValueError(f"batch_dims must be >= 0, got {batch_dims}")
        self.batch_dims = int(batch_dims)

    def _dims(self, x: torch.Tensor) -> tuple[int, ...]:
        if x.dim() <= self.batch_dims:
            raise ValueError(f"a point needs more than {self.batch_dims} dimensions, got shape {tuple(x.shape)}")
        return tuple(range(self.batch_dims, x.dim()))

    def inner(self, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor | None = None) -> torch.Tensor:
        """Embedded inner product `⟨u, v⟩` per sphere (keepdim, so it broadcasts against points)."""
        v = u if v is None else v
        return (u * v).sum(dim=self._dims(u), keepdim=True)

    def norm(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Norm of a tangent vector per sphere (keepdim)."""
        return torch.linalg.vector_norm(u, dim=self._dims(u), keepdim=True)

    def projx(self, x):
        return x / torch.linalg.vector_norm(x, dim=self._dims(x), keepdim=True)

    def frame(self, x):
        """The point as one N×1 column (the sphere is St(1, N))."""
        return x.reshape(-1, 1)

    def proju(self, x, u):
        # Divides by ‖x‖² so that the result is tangent even at a point slightly off the sphere.
        return u - self.inner(x, u, x) / self.inner(x, x) * x

    def egrad2rgrad(self, x, g):
        """Riemannian gradient of the embedded metric: the tangent projection of the Euclidean one."""
        return self.proju(x, g)

    def expmap(self, x, u):
        """Exponential map `cos‖u‖ x + sin‖u‖ u/‖u‖`, exact and smooth as ‖u‖ → 0."""
        nu = self.norm(x, u)
        return torch.cos(nu) * x + sinc(nu) * u

    def retr(self, x, u):
        return self.expmap(x, u)

    def transp(self, x, u, v):
        """Parallel transport of the tangent vector `v` at `x` along the geodesic `t ↦ Exp_x(t u)`, t ∈ [0, 1]."""
        nu = self.norm(x, u)
        return v - self.inner(x, u, v) * (0.5 * sinc(nu / 2) ** 2 * u + sinc(nu) * x)

    def logmap(self, x, y):
        """Inverse of `expmap` (defined for y ≠ −x): the tangent vector at `x` pointing to `y`."""
        w = y - self.inner(x, x, y) * x
        theta = torch.atan2(self.norm(x, w), self.inner(x, x, y))
        return w / sinc(theta)

    def dist(self, x, y):
        """Geodesic distance (angle) per sphere, accurate for near and far points alike."""
        w = y - self.inner(x, x, y) * x
        return torch.atan2(self.norm(x, w), self.inner(x, x, y))

    def random_point(self, *shape, dtype=None, generator=None) -> torch.Tensor:
        """A uniformly distributed point of the given shape."""
        return self.projx(torch.randn(*shape, dtype=dtype, generator=generator))

    def distance_to_manifold(self, x):
        n = torch.linalg.vector_norm(x.detach().double(), dim=self._dims(x))
        return float((n - 1.0).abs().max())

    def __repr__(self) -> str:
        return f"Sphere(batch_dims={self.batch_dims})" if self.batch_dims else "Sphere()"


class SphereProduct:
    """Product `S^{d_1−1} × … × S^{d_L−1}` of spheres of different sizes, on packed flat vectors.

    `pack` concatenates the flattened per-layer tensors into one vector; per-layer reductions are
    segment sums (`index_add`), so each operation is a single batched call whatever the depth.
    """

    def __init__(self, shapes, device=None):
        self.shapes = [torch.Size(s) for s in shapes]
        if not self.shapes:
            raise ValueError("SphereProduct needs at least one sphere")
        self.sizes = [s.numel() for s in self.shapes]
        if min(self.sizes) < 2:
            raise ValueError(f"each sphere needs at least 2 entries, got sizes {self.sizes}")
        self.segments = torch.repeat_interleave(torch.arange(len(self.sizes), device=device),
                                                torch.tensor(self.sizes, device=device))

    @property
    def count(self) -> int:
        """Number of spheres (layers)."""
        return len(self.sizes)

    def pack(self, tensors) -> torch.Tensor:
        """One flat vector from per-layer tensors (their shapes must match `shapes`)."""
        tensors = list(tensors)
        if [t.shape for t in tensors] != self.shapes:
            raise ValueError(f"shapes {[tuple(t.shape) for t in tensors]} do not match {self.shapes}")
        return torch.cat([t.reshape(-1) for t in tensors])

    def unpack(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Per-layer tensors (views) from a flat vector."""
        return [c.view(s) for c, s in zip(torch.split(flat, self.sizes), self.shapes, strict=True)]

    def segment_sum(self, values: torch.Tensor) -> torch.Tensor:
        """Per-sphere sums of a flat vector: shape `(L,)`."""
        seg = self.segments.to(values.device)
        return torch.zeros(self.count, dtype=values.dtype, device=values.device).index_add(0, seg, values)

    def spread(self, per_sphere: torch.Tensor) -> torch.Tensor:
        """Broadcast a per-sphere value `(L,)` back onto the flat layout."""
        return per_sphere[self.segments.to(per_sphere.device)]

    def inner(self, u: torch.Tensor, v: torch.Tensor | None = None) -> torch.Tensor:
        """Per-sphere inner products `(L,)`."""
        return self.segment_sum(u * (u if v is None else v))

    def norm(self, u: torch.Tensor) -> torch.Tensor:
        """Per-sphere norms `(L,)`."""
        return self.inner(u).sqrt()

    def projx(self, x: torch.Tensor) -> torch.Tensor:
        return x / self.spread(self.norm(x))

    def proju(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return u - self.spread(self.inner(x, u) / self.inner(x)) * x

    egrad2rgrad = proju

    def expmap(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Exponential map on every sphere at once (exact and smooth as ‖u_l‖ → 0)."""
        nu = self.norm(u)
        return self.spread(torch.cos(nu)) * x + self.spread(sinc(nu)) * u

    def transp(self, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Parallel transport of `v` along `t ↦ Exp_x(t u)` on every sphere at once."""
        nu = self.norm(u)
        uv = self.spread(self.inner(u, v))
        return v - uv * (self.spread(0.5 * sinc(nu / 2) ** 2) * u + self.spread(sinc(nu)) * x)

    def distance_to_manifold(self, x: torch.Tensor) -> torch.Tensor:
        """Per-sphere `|‖x_l‖ − 1|` (float64)."""
        return (self.norm(x.detach().double()) - 1.0).abs()
