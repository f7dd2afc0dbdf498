"""`manifold-adam` (paper 001): Euclidean == torch Adam, steps stay on the manifold, Grassmann invariance, resume."""

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lipnet.manifolds import Grassmann, Manifold, ManifoldParameter, Sphere, Stiefel, subspace_distance
from lipnet.nn.layers import FrobeniusLinear, OrthogonalLinear
from lipnet.optim import make_optimizer
from lipnet.optim.manifold_adam import DEFAULT_LR, ManifoldAdam


def _orth_err(p):
    x = p.detach().double().reshape(p.shape[0], -1)
    return float(torch.linalg.matrix_norm(x.T @ x - torch.eye(x.shape[1], dtype=x.dtype)))


def _euclidean_loss(params):
    return sum(((p**3).sum() + (p * torch.linspace(-1, 1, p.numel()).reshape(p.shape)).sum()) for p in params)




@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_euclidean_equals_torch_adam_step_for_step(weight_decay, dtype):
    shapes = [(5, 4), (7,), (2, 3, 2)]
    ours = [torch.nn.Parameter(0.5 * torch.randn(s, dtype=dtype)) for s in shapes]
    ref = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    hyper = dict(lr=3e-2, betas=(0.8, 0.99), eps=1e-7, weight_decay=weight_decay)
    # two groups, the second with its own lr, as torch allows
    opt = ManifoldAdam([{"params": ours[:2]}, {"params": ours[2:], "lr": 1e-2}], **hyper)
    ref_opt = torch.optim.Adam([{"params": ref[:2]}, {"params": ref[2:], "lr": 1e-2}], **hyper)
    for _ in range(40):
        for params, o in ((ours, opt), (ref, ref_opt)):
            def closure(params=params, o=o):
                o.zero_grad()
                loss = _euclidean_loss(params)
                loss.backward()
                return loss
            o.step(closure)
        for a, b in zip(ours, ref, strict=True):
            assert torch.equal(a, b)
    for a, b in zip(ours, ref, strict=True):
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(opt.state[a][key], ref_opt.state[b][key])


def _procrustes(shape, dtype, seed=12345):
    gen = torch.Generator().manual_seed(seed)
    target = Stiefel().projx(torch.randn(*shape, generator=gen, dtype=torch.float64)).to(dtype)
    a = torch.randn(shape[0], shape[0], generator=gen, dtype=torch.float64).to(dtype) / shape[0] ** 0.5
    return lambda y: ((a @ (y - target)) ** 2).sum()


@settings(max_examples=15, deadline=None)
@given(big=st.integers(1, 12), data=st.data(), dtype=st.sampled_from([torch.float32, torch.float64]),
       retraction=st.sampled_from(["cayley", "exp"]), lr=st.sampled_from([1e-3, 1e-1, 1.0]))
def test_stiefel_steps_stay_on_the_manifold(big, data, dtype, retraction, lr):
    small = data.draw(st.integers(1, big))
    p = ManifoldParameter(torch.randn(big, small, dtype=dtype), Stiefel())
    loss_fn = _procrustes((big, small), dtype)
    opt = ManifoldAdam([p], lr=lr, retraction=retraction)
    for _ in range(20):
        opt.zero_grad()
        loss_fn(p).backward()
        opt.step()
    assert _orth_err(p) < (2e-6 if dtype == torch.float32 else 1e-13)
    lam = opt.state[p]["section"]
    assert lam.dtype == torch.float64
    assert _orth_err(lam) < 1e-13


@pytest.mark.parametrize("dtype,steps,tol", [(torch.float32, 300, 1e-5), (torch.float64, 300, 1e-12)])
def test_orthogonality_does_not_drift(dtype, steps, tol):
    p = ManifoldParameter(torch.randn(16, 4, dtype=dtype), Stiefel())
    loss_fn = _procrustes((16, 4), dtype)
    opt = ManifoldAdam([p], lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(p).backward()
        opt.step()
    assert _orth_err(p) < tol


@pytest.mark.slow
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_orthogonality_after_ten_thousand_steps(dtype, tol):
    # With the default float64 section (a float32 section reaches 1.3e-5 after 10,000 steps: see the benchmark).
    p = ManifoldParameter(torch.randn(32, 8, dtype=dtype), Stiefel())
    loss_fn = _procrustes((32, 8), dtype)
    opt = ManifoldAdam([p], lr=0.05)
    for _ in range(10_000):
        opt.zero_grad()
        loss_fn(p).backward()
        opt.step()
    assert _orth_err(p) < tol


def test_converges_on_procrustes_and_brockett():
    # orthogonal Procrustes: min ‖Y − T‖² has its minimum 0 at Y = T
    p = ManifoldParameter(torch.randn(10, 3, dtype=torch.float64), Stiefel())
    loss_fn = _procrustes((10, 3), torch.float64)
    opt = ManifoldAdam([p], lr=0.03)
    first = float(loss_fn(p).detach())
    for _ in range(500):
        opt.zero_grad()
        loss_fn(p).backward()
        opt.step()
    assert float(loss_fn(p).detach()) < 1e-3 * first
    # Brockett: min tr(YᵀMYD), M = diag(1..N), D = diag(n..1): minimum Σ_i i·(n+1−i) at the leading... smallest axes
    big, small = 8, 3
    m = torch.diag(torch.arange(1.0, big + 1, dtype=torch.float64))
    d = torch.diag(torch.arange(small, 0, -1, dtype=torch.float64))
    p = ManifoldParameter(torch.randn(big, small, dtype=torch.float64), Stiefel())
    opt = ManifoldAdam([p], lr=0.03)
    for _ in range(800):
        opt.zero_grad()
        torch.trace(p.T @ m @ p @ d).backward()
        opt.step()
    best = float(sum(i * (small + 1 - i) for i in range(1, small + 1)))
    assert float(torch.trace(p.T @ m @ p @ d).detach()) == pytest.approx(best, abs=1e-3)


def test_grassmann_step_is_invariant_under_a_change_of_basis():
    big, small = 9, 3
    gen = torch.Generator().manual_seed(3)
    sym = torch.randn(big, big, generator=gen, dtype=torch.float64)
    sym = sym + sym.T
    y0 = Stiefel().projx(torch.randn(big, small, generator=gen, dtype=torch.float64))
    rot = torch.linalg.qr(torch.randn(small, small, generator=gen, dtype=torch.float64))[0]

    def loss_fn(y):  # a function of span(Y) only: tr(Yᵀ S Y)
        return torch.trace(y.T @ sym @ y)

    runs = []
    for start in (y0, y0 @ rot):
        p = ManifoldParameter(start.clone(), Grassmann())
        opt = ManifoldAdam([p], lr=0.05)
        losses = []
        for _ in range(25):
            opt.zero_grad()
            loss = loss_fn(p)
            loss.backward()
            losses.append(float(loss.detach()))
            opt.step()
        runs.append((p.detach().clone(), losses))
    (ya, la), (yb, lb) = runs
    assert la == pytest.approx(lb, rel=1e-10, abs=1e-10)
    assert subspace_distance(ya, yb) < 1e-10
    assert torch.allclose(yb, ya @ rot, atol=1e-10)  # the frame moves with its basis
    assert subspace_distance(ya, y0) > 1e-2  # and it did move
    assert la[-1] < la[0]


def test_sphere_is_stiefel_of_the_flattened_tensor():
    v = torch.randn(3, 4, dtype=torch.float64)
    sphere = ManifoldParameter(v.clone(), Sphere())
    column = ManifoldParameter(v.reshape(12, 1).clone(), Stiefel())
    target = torch.randn(3, 4, dtype=torch.float64)
    opts = [ManifoldAdam([sphere], lr=0.05), ManifoldAdam([column], lr=0.05)]
    for _ in range(30):
        for p, o in zip((sphere, column), opts, strict=True):
            o.zero_grad()
            ((p.reshape(3, 4) - target) ** 2).sum().backward()
            o.step()
    assert sphere.shape == (3, 4)
    assert torch.allclose(sphere.reshape(12, 1), column, atol=1e-14)
    assert abs(float(sphere.detach().norm()) - 1) < 1e-14


@pytest.mark.parametrize("max_section_dim", [512, 0])
def test_large_spheres_use_the_compact_section(max_section_dim):
    torch.manual_seed(4)
    layer = FrobeniusLinear(6, 5, gain=3.0)
    x, y = torch.randn(40, 6), torch.randn(40, 5)
    opt = ManifoldAdam.from_model(layer, lr=0.03, max_section_dim=max_section_dim)
    first = None
    for _ in range(60):
        opt.zero_grad()
        loss = ((layer(x) - y) ** 2).mean()
        loss.backward()
        first = first or float(loss.detach())
        opt.step()
    state = opt.state[layer.direction]
    assert ("section" in state) == (max_section_dim > 0) and ("point" in state) == (max_section_dim == 0)
    assert abs(float(layer.direction.detach().double().norm()) - 1) < 1e-6
    assert float(loss.detach()) < 0.9 * first


@pytest.mark.parametrize("n_in,n_out", [(5, 5), (3, 7), (7, 3)])
def test_orthogonal_and_frobenius_layers_train_together(n_in, n_out):
    torch.manual_seed(1)
    net = torch.nn.Sequential(OrthogonalLinear(n_in, n_out), torch.nn.Tanh(), FrobeniusLinear(n_out, 2, gain=2.0))
    x = torch.randn(64, n_in)
    y = torch.sin(x[:, :2]) * 0.8
    opt = ManifoldAdam.from_model(net)
    orth = net[0]
    assert orth.transposed == (n_out < n_in)

    def closure():
        opt.zero_grad()
        loss = ((net(x) - y) ** 2).mean()
        loss.backward()
        return loss

    first = float(closure().detach())
    for _ in range(150):
        loss = opt.step(closure)
    assert float(loss.detach()) < 0.7 * first
    assert _orth_err(orth.frame) < 2e-6
    assert abs(float(orth.lipschitz()) - 1.0) < 1e-6
    assert abs(float(net[2].direction.detach().norm()) - 1.0) < 1e-6
    assert net[0].bias.grad is not None and "section" not in opt.state[net[0].bias]


def test_state_dict_round_trip_resumes_exactly():
    def model():
        torch.manual_seed(2)
        return torch.nn.Sequential(OrthogonalLinear(4, 6), torch.nn.ReLU(), OrthogonalLinear(6, 2), torch.nn.Tanh(),
                                   FrobeniusLinear(2, 3))

    x, y = torch.randn(32, 4), torch.randn(32, 3)

    def run(net, opt, steps):
        for _ in range(steps):
            opt.zero_grad()
            ((net(x) - y) ** 2).mean().backward()
            opt.step()

    net = model()
    opt = ManifoldAdam.from_model(net, lr=0.02, max_section_dim=4)  # the 3×2 sphere takes the compact section
    run(net, opt, 10)
    saved_model, saved_opt = copy.deepcopy(net.state_dict()), copy.deepcopy(opt.state_dict())
    run(net, opt, 10)

    net2 = model()
    opt2 = ManifoldAdam.from_model(net2, lr=0.02, max_section_dim=4)
    net2.load_state_dict(saved_model)
    opt2.load_state_dict(saved_opt)
    section = opt2.state[net2[0].frame]["section"]
    assert section.dtype == torch.float64  # not cast to the float32 parameter's dtype
    assert opt2.state[net2[4].direction]["point"].dtype == torch.float64
    run(net2, opt2, 10)
    for a, b in zip(net.parameters(), net2.parameters(), strict=True):
        assert torch.equal(a, b)


def test_section_resynchronises_after_an_outside_change():
    p = ManifoldParameter(torch.randn(6, 2, dtype=torch.float64), Stiefel())
    opt = ManifoldAdam([p], lr=0.01)
    loss_fn = _procrustes((6, 2), torch.float64)
    for _ in range(3):
        opt.zero_grad()
        loss_fn(p).backward()
        opt.step()
    with torch.no_grad():  # someone re-initialises the frame
        p.copy_(Stiefel().projx(torch.randn(6, 2, dtype=torch.float64)))
    before = p.detach().clone()
    opt.zero_grad()
    loss_fn(p).backward()
    opt.step()
    lam = opt.state[p]["section"]
    assert torch.equal(lam[:, :2], p.detach())
    assert (p.detach() - before).norm() < 0.1  # a small step from the new point, not from the old section


def test_registry_builds_it_with_the_default_lr():
    net = torch.nn.Sequential(OrthogonalLinear(3, 4), FrobeniusLinear(4, 1))
    opt = make_optimizer("manifold-adam", net)
    assert isinstance(opt, ManifoldAdam)
    assert opt.param_groups[0]["lr"] == DEFAULT_LR
    assert make_optimizer("manifold-adam", net, lr=0.1).param_groups[0]["lr"] == 0.1


def test_bad_input_is_rejected_with_a_clear_message():
    with pytest.raises(ValueError, match="tall"):
        ManifoldAdam([ManifoldParameter(torch.randn(3, 5), Stiefel())])
    with pytest.raises(TypeError, match="another optimiser"):

        class Odd(Manifold):  # a complete manifold that manifold-adam does not know
            def projx(self, x):
                return x

            def proju(self, x, u):
                return u

            def retr(self, x, u):
                return x + u

            def distance_to_manifold(self, x):
                return 0.0

        ManifoldAdam([ManifoldParameter(torch.randn(3), Odd())])
    with pytest.raises(ValueError, match="lr"):
        ManifoldAdam([torch.nn.Parameter(torch.randn(2))], lr=0.0)
    with pytest.raises(ValueError, match="retraction"):
        ManifoldAdam([torch.nn.Parameter(torch.randn(2))], retraction="qr")
    with pytest.raises(ValueError, match="section_dtype"):
        ManifoldAdam([torch.nn.Parameter(torch.randn(2))], section_dtype="float16")
    with pytest.raises(TypeError):
        ManifoldAdam([torch.nn.Parameter(torch.randn(2))], momentum=0.9)
