"""Stiefel and Grassmann manifolds and their global tangent space (paper 001): the laws, on random shapes."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lipnet.manifolds import Grassmann, ManifoldParameter, Stiefel, subspace_distance
from lipnet.manifolds import global_tangent as gt

SETTINGS = settings(max_examples=25, deadline=None)




@st.composite
def frames(draw, max_big=9):
    """(Y, egrad, seed): a random orthonormal N×n frame in float64 and a random Euclidean gradient."""
    big = draw(st.integers(1, max_big))
    small = draw(st.integers(1, big))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    y = Stiefel().projx(torch.randn(big, small, generator=gen, dtype=torch.float64))
    g = torch.randn(big, small, generator=gen, dtype=torch.float64)
    return y, g, seed


def _orth_err(x):
    return float(torch.linalg.matrix_norm(x.T @ x - torch.eye(x.shape[1], dtype=x.dtype)))


@SETTINGS
@given(frames())
def test_section_is_orthogonal_and_starts_with_y(data):
    y, _, _ = data
    lam = gt.global_section(y)
    assert lam.shape == (y.shape[0], y.shape[0])
    assert _orth_err(lam) < 1e-13
    assert torch.equal(lam[:, : y.shape[1]], y)


@SETTINGS
@given(frames())
def test_lift_is_horizontal_and_maps_back_to_the_riemannian_gradient(data):
    y, g, _ = data
    man = Stiefel()
    lam = man.section(y)
    packed = man.lift(lam, g)
    small = y.shape[1]
    a = packed[:small]
    assert torch.equal(a, -a.T)  # A is skew
    # the dense λᵀ Ω λ is in g^hor: [[A, −Bᵀ], [B, 0]]
    rgrad = man.rgrad_canonical(y, g)
    dense = lam.T @ man.horizontal_lift(y, rgrad) @ lam
    assert torch.allclose(dense, gt.hor_matrix(packed), atol=1e-12)
    assert torch.allclose(dense[small:, small:], torch.zeros_like(dense[small:, small:]), atol=1e-12)
    # and back: λ U E is the Riemannian gradient (canonical metric)
    assert torch.allclose(man.tangent(lam, packed), rgrad, atol=1e-12)
    # the Riemannian gradient is tangent: Yᵀ grad skew
    ytg = y.T @ rgrad
    assert torch.allclose(ytg, -ytg.T, atol=1e-12)


@SETTINGS
@given(frames())
def test_grassmann_lift_has_no_a_block_and_maps_back_to_the_horizontal_gradient(data):
    y, g, _ = data
    man = Grassmann()
    lam = man.section(y)
    packed = man.lift(lam, g)
    small = y.shape[1]
    assert torch.count_nonzero(packed[:small]) == 0
    assert torch.allclose(man.tangent(lam, packed), g - y @ (y.T @ g), atol=1e-12)


@SETTINGS
@given(frames(), st.floats(0.01, 3.0), st.sampled_from(gt.RETRACTIONS))
def test_move_matches_dense_retraction_and_stays_on_manifold(data, scale, method):
    y, g, _ = data
    man = Stiefel()
    lam = man.section(y)
    packed = -scale * man.lift(lam, g)
    new = man.move(lam, packed, method)
    h = gt.hor_matrix(packed)
    eye = torch.eye(h.shape[0], dtype=h.dtype)
    dense = torch.linalg.solve(eye - 0.5 * h, eye + 0.5 * h) if method == "cayley" else torch.linalg.matrix_exp(h)
    assert torch.allclose(new, lam @ dense, atol=1e-10)
    assert _orth_err(new) < 1e-12
    assert man.distance_to_manifold(new[:, : y.shape[1]]) < 1e-12


def test_move_by_zero_is_the_identity_and_first_order_is_the_tangent():
    man = Stiefel()
    y = man.projx(torch.randn(8, 3, dtype=torch.float64))
    lam = man.section(y)
    assert torch.allclose(man.move(lam, torch.zeros(8, 3, dtype=torch.float64)), lam, atol=1e-15)
    packed = man.lift(lam, torch.randn(8, 3, dtype=torch.float64))
    for method in gt.RETRACTIONS:
        t = 1e-6
        deriv = (man.move(lam, t * packed, method)[:, :3] - y) / t
        assert torch.allclose(deriv, man.tangent(lam, packed), atol=1e-5)


def test_expmap_is_the_canonical_geodesic():
    man = Stiefel()
    y = man.projx(torch.randn(6, 2, dtype=torch.float64))
    v = man.rgrad_canonical(y, torch.randn(6, 2, dtype=torch.float64))
    # exp(2v) = exp(v) followed by the transported v: check the geodesic property on the group.
    lam = man.section(y)
    packed = lam.T @ v
    two = man.move(lam, 2 * packed, "exp")
    one_one = man.move(man.move(lam, packed, "exp"), packed, "exp")
    assert torch.allclose(two, one_one, atol=1e-12)
    assert torch.allclose(man.expmap(y, v), man.move(lam, packed, "exp")[:, :2], atol=1e-12)
    assert torch.allclose(man.expmap(y, 2 * v), two[:, :2], atol=1e-12)


@SETTINGS
@given(frames(max_big=7))
def test_grassmann_section_depends_only_on_the_subspace(data):
    y, _, seed = data
    small = y.shape[1]
    gen = torch.Generator().manual_seed(seed + 1)
    r = torch.linalg.qr(torch.randn(small, small, generator=gen, dtype=torch.float64))[0]
    lam, lam_r = gt.global_section(y), gt.global_section(y @ r)
    assert torch.allclose(lam[:, small:], lam_r[:, small:], atol=1e-9)
    assert subspace_distance(y, y @ r) < 1e-12


def test_existing_embedded_methods_still_work():
    man = Stiefel()
    y = man.projx(torch.randn(5, 3, dtype=torch.float64))
    assert man.distance_to_manifold(y) < 1e-13
    u = man.proju(y, torch.randn(5, 3, dtype=torch.float64))
    assert torch.allclose(y.T @ u, -(y.T @ u).T, atol=1e-13)
    assert man.distance_to_manifold(man.retr(y, 0.1 * u)) < 1e-13
    p = ManifoldParameter(torch.randn(5, 3), Grassmann())
    assert p.manifold.distance_to_manifold(p) < 1e-5


@SETTINGS
@given(frames(), st.sampled_from(gt.RETRACTIONS))
def test_householder_section_of_the_sphere_agrees_with_the_dense_one(data, method):
    y, g, _ = data
    y, g = y[:, :1], g[:, :1]
    pivot = gt.householder_pivot(y)
    lam = gt.householder_section(y, pivot)
    assert _orth_err(lam) < 1e-13
    assert torch.allclose(lam[:, :1], y, atol=1e-14)
    packed = gt.householder_lift(y, pivot, g)
    assert torch.allclose(packed, gt.lift(lam, g), atol=1e-12)
    new = gt.householder_apply(y, pivot, gt.retract_point(-0.5 * packed, method))
    assert torch.allclose(new, gt.move_section(lam, -0.5 * packed, method)[:, :1], atol=1e-12)
    assert abs(float(new.norm()) - 1) < 1e-14


def test_section_rejects_a_wide_frame():
    with pytest.raises(ValueError, match="tall"):
        gt.global_section(torch.randn(2, 3))
    with pytest.raises(ValueError, match="retraction"):
        gt.retraction_factors(torch.zeros(3, 1), "qr")
