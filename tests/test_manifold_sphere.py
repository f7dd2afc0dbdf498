"""Sphere geometry (lipnet.manifolds.sphere): projection, exp map, transport, batched forms, safety at 0."""

import copy
import math
import pickle

import pytest
import torch

from lipnet.manifolds import ManifoldParameter, Sphere
from lipnet.manifolds.sphere import SphereProduct, sinc

D = torch.float64


def _point_tangent(shape, batch_dims=0, scale=1.0):
    m = Sphere(batch_dims)
    x = m.projx(torch.randn(*shape, dtype=D))
    u = m.proju(x, torch.randn(*shape, dtype=D))
    return m, x, u / m.norm(x, u) * scale  # every tangent of norm `scale`


@pytest.mark.parametrize("shape,batch_dims", [((5, 3), 0), ((4, 6, 2), 1), ((7,), 0)])
def test_projections_and_exp_map(shape, batch_dims):
    m, x, u = _point_tangent(shape, batch_dims, scale=2.5)
    dims = tuple(range(batch_dims, x.dim()))
    assert torch.allclose(torch.linalg.vector_norm(x, dim=dims), torch.ones((), dtype=D), atol=1e-14)
    assert torch.allclose(m.inner(x, x, u), torch.zeros((), dtype=D), atol=1e-14)  # tangent
    assert torch.allclose(m.proju(x, u), u, atol=1e-14)  # projection is idempotent
    y = m.expmap(x, u)
    assert m.distance_to_manifold(y) < 1e-14
    # geodesic distance equals the tangent norm (below π), and log inverts exp
    assert torch.allclose(m.dist(x, y), m.norm(x, u), atol=1e-12)
    assert torch.allclose(m.logmap(x, y), u, atol=1e-12)


def test_exp_map_closed_form_and_curve_derivatives():
    m, x, u = _point_tangent((4, 3))
    nu = u.norm()
    expected = torch.cos(nu) * x + torch.sin(nu) * u / nu
    assert torch.allclose(m.expmap(x, u), expected, atol=1e-15)
    # c(t) = Exp(t u): c'(0) = u and c''(0) = −‖u‖² x (central differences)
    h = 1e-4
    cp, cm, c0 = m.expmap(x, h * u), m.expmap(x, -h * u), x
    assert torch.allclose((cp - cm) / (2 * h), u, atol=1e-8)
    assert torch.allclose((cp - 2 * c0 + cm) / h**2, -nu**2 * x, atol=1e-6)


def test_batched_matches_per_layer_loop():
    m1, x, u = _point_tangent((3, 5, 4), batch_dims=1)
    v = m1.proju(x, torch.randn(3, 5, 4, dtype=D))
    single = Sphere()
    batched = (m1.expmap(x, u), m1.transp(x, u, v), m1.proju(x, 2 * v))
    for i in range(3):
        assert torch.allclose(batched[0][i], single.expmap(x[i], u[i]), atol=1e-15)
        assert torch.allclose(batched[1][i], single.transp(x[i], u[i], v[i]), atol=1e-15)
        assert torch.allclose(batched[2][i], single.proju(x[i], 2 * v[i]), atol=1e-15)


def test_parallel_transport_is_an_isometry_onto_the_new_tangent_space():
    m, x, u = _point_tangent((6, 4), scale=1.3)
    v, w = (m.proju(x, torch.randn(6, 4, dtype=D)) for _ in range(2))
    y = m.expmap(x, u)
    tv, tw = m.transp(x, u, v), m.transp(x, u, w)
    assert abs(float((tv * y).sum())) < 1e-13  # tangent at the end point
    assert math.isclose(float((tv * tw).sum()), float((v * w).sum()), abs_tol=1e-13)
    # the geodesic's own velocity is transported to the velocity at the end point
    velocity = -u.norm() * torch.sin(u.norm()) * x + torch.cos(u.norm()) * u
    assert torch.allclose(m.transp(x, u, u), velocity, atol=1e-13)
    # transport is the limit of projecting v onto the tangent spaces along the curve in small steps
    n, vt = 2000, v.clone()
    for k in range(n):
        vt = m.proju(m.expmap(x, ((k + 1) / n) * u), vt)
    vt = vt * v.norm() / vt.norm()
    assert torch.allclose(vt, tv, atol=5e-3 * float(v.norm()))


@pytest.mark.parametrize("eps", [0.0, 1e-30, 1e-12, 1e-7])
def test_safe_as_the_tangent_vanishes(eps):
    m, x, u = _point_tangent((5, 3))
    u = u / u.norm() * eps
    v = m.proju(x, torch.randn(5, 3, dtype=D))
    y, tv = m.expmap(x, u), m.transp(x, u, v)
    assert torch.isfinite(y).all() and torch.isfinite(tv).all()
    assert torch.allclose(y, x + u, atol=1e-14)
    assert torch.allclose(tv, v, atol=1e-12)
    # gradients through the exp map stay finite at and near 0
    uu = u.clone().requires_grad_(True)
    (m.expmap(x, uu) * v).sum().backward()
    assert torch.isfinite(uu.grad).all()
    assert torch.allclose(uu.grad, v, atol=1e-6)  # d/du ⟨Exp_x(u), v⟩ at u=0 is v (v tangent)


def test_sinc_is_sin_over_a():
    a = torch.tensor([0.0, 1e-8, 0.3, 2.0, 3.0], dtype=D)
    ref = torch.where(a == 0, torch.ones_like(a), torch.sin(a) / a)
    assert torch.allclose(sinc(a), ref, atol=1e-15)


def test_sphere_product_matches_single_spheres():
    shapes = [(4, 2), (3, 4), (1, 3)]
    prod = SphereProduct(shapes)
    single = Sphere()
    xs = [single.projx(torch.randn(*s, dtype=D)) for s in shapes]
    us = [single.proju(x, torch.randn(*x.shape, dtype=D)) for x in xs]
    vs = [single.proju(x, torch.randn(*x.shape, dtype=D)) for x in xs]
    x, u, v = prod.pack(xs), prod.pack(us), prod.pack(vs)
    ey, tv = prod.unpack(prod.expmap(x, u)), prod.unpack(prod.transp(x, u, v))
    for i in range(len(shapes)):
        assert torch.allclose(ey[i], single.expmap(xs[i], us[i]), atol=1e-15)
        assert torch.allclose(tv[i], single.transp(xs[i], us[i], vs[i]), atol=1e-15)
    assert torch.allclose(prod.norm(u), torch.stack([q.norm() for q in us]), atol=1e-15)
    assert float(prod.distance_to_manifold(prod.expmap(x, 3 * u)).max()) < 1e-14
    with pytest.raises(ValueError, match="do not match"):
        prod.pack(xs[:2])


def test_manifold_parameter_pickles_and_copies():
    p = ManifoldParameter(torch.randn(3, 4), Sphere())
    for q in (pickle.loads(pickle.dumps(p)), copy.deepcopy(p)):
        assert isinstance(q.manifold, Sphere) and torch.equal(q, p)
    assert Sphere().check_point_on_manifold(p)
    ok, why = Sphere().check_point_on_manifold(2 * p.detach(), explain=True)
    assert not ok and "sphere" in why
