import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

from lipnet.exceptions import LipnetArgument
from lipnet.nn import Controller
from lipnet.pathlift import layer_weights, path_magnitude_diag, path_norm
from lipnet.pathlift.rescale import (
    RescaleResult,
    fisher_diag,
    rescale,
    rescale_weights,
    rescaling_criterion,
    solve_rescaling,
)

KINDS = ["plain", "frobenius", "spectral", "orthogonal"]


def _controller(layer, hidden=(12, 7, 10), seed=0, spread=1.0):
    torch.manual_seed(seed)
    c = Controller(3, 2, hidden, layer=layer, state_scale=[1.0, 2.0, 0.5], state_offset=[0.1, -0.2, 0.0],
                   action_scale=[2.0, 0.5], action_offset=[0.1, 0.0], u_low=-3, u_high=3).double()
    with torch.no_grad():  # random weights of uneven magnitude per neuron: something to rescale
        for lin in c.layers:
            lin.bias.normal_()
            for p in (getattr(lin, "raw_weight", None), getattr(lin, "direction", None)):
                if p is not None:
                    p.mul_(torch.exp(spread * torch.randn(p.shape[0], 1, dtype=p.dtype)))
    return c


def _criterion_of(c):
    return rescaling_criterion(path_magnitude_diag(layer_weights(c)))


@pytest.mark.parametrize("layer", KINDS)
@pytest.mark.parametrize("preserve", [None, False])
def test_rescaled_controller_computes_the_same_outputs(layer, preserve):
    c = _controller(layer)
    x = torch.randn(200, 3, dtype=torch.float64) * 3
    with torch.no_grad():
        y0, net0 = c(x), c.network(x)
    res = rescale(c, preserve_bound=preserve)
    with torch.no_grad():
        assert torch.allclose(c(x), y0, rtol=0, atol=1e-10)
        assert torch.allclose(c.network(x), net0, rtol=0, atol=1e-10)
    assert isinstance(res, RescaleResult) and res.converged
    assert res.criterion_after < res.criterion_before
    assert res.criterion_after == pytest.approx(_criterion_of(c), rel=1e-9)
    lam = np.concatenate(res.scales)
    assert lam.std() > 1e-3  # it really moved the weights
    # The rescaling-invariant quantities did not move.
    ws = c.folded_weights()
    assert path_norm(ws, 2) > 0


@pytest.mark.parametrize("layer", KINDS)
def test_criterion_decreases_monotonically(layer):
    c = _controller(layer, spread=2.0)
    res = rescale(c, tol=1e-8, max_sweeps=200, preserve_bound=False if layer != "orthogonal" else None)
    h = np.array(res.criterion_history)
    assert len(h) == res.iterations + 1 >= 3
    assert np.all(np.diff(h) <= 1e-9 * np.abs(h[:-1]))
    assert h[-1] < h[0]


def test_converges_to_the_minimiser_of_the_convex_criterion():
    c = _controller("plain", hidden=(5, 4), spread=1.5)
    g = path_magnitude_diag(layer_weights(c))
    z, hist, sweeps, converged = solve_rescaling(g, tol=1e-10, max_sweeps=2000)
    assert converged
    sizes = [5, 4]

    def f(v):
        return rescaling_criterion(g, [v[:5], v[5:]])
    ref = minimize(f, np.zeros(sum(sizes)), method="BFGS", options={"gtol": 1e-10})
    assert hist[-1] == pytest.approx(ref.fun, abs=1e-6 * max(1.0, abs(ref.fun)))
    # zero gradient at the solution: p·(Σ_out h' − Σ_in h')/S = n_out − n_in per neuron
    eps = 1e-6
    zf = np.concatenate(z)
    grad = [(f(zf + eps * e) - f(zf - eps * e)) / (2 * eps) for e in np.eye(zf.size)]
    assert np.max(np.abs(grad)) < 1e-4


def test_tolerance_and_iteration_count_are_reported():
    c = _controller("plain", spread=2.0)
    loose = rescale(c.__class__.from_config(c.config()).double(), tol=1.0, max_sweeps=500)
    capped = rescale(_controller("plain", spread=2.0), tol=1e-12, max_sweeps=3)
    assert capped.iterations == 3 and not capped.converged
    assert loose.converged and loose.iterations >= 1
    # a second pass on an already-rescaled network has almost nothing left to do
    first = rescale(c, tol=1e-6, max_sweeps=500)
    again = rescale(c, tol=1e-6, max_sweeps=500)
    assert first.converged
    assert again.criterion_before == pytest.approx(first.criterion_after, rel=1e-9)
    assert again.criterion_after >= again.criterion_before - 1e-4 * abs(again.criterion_before)
    assert np.max(np.abs(np.log(np.concatenate(again.scales)))) < 1e-3


def test_frobenius_gains_are_reexpressed_and_bound_preserved():
    c = _controller("frobenius", spread=1.5)
    prod0 = c.network_lipschitz_bound()
    res = rescale(c)  # preserve_bound defaults to True for normalised layers
    assert res.damping < 1.0 or res.bound_after <= prod0
    assert c.network_lipschitz_bound() <= prod0 * (1 + 1e-10)
    for lin in c.layers:  # direction on the unit sphere, gain = ‖W‖_F
        assert float(lin.direction.detach().norm()) == pytest.approx(1.0, abs=1e-12)
        assert float(lin.gain) == pytest.approx(float(lin.weight.detach().norm()), rel=1e-12)
    # without the budget the gains move freely (and the product may grow); function still exact
    c2 = _controller("frobenius", spread=1.5)
    res2 = rescale(c2, preserve_bound=False)
    assert res2.damping == 1.0
    assert res2.criterion_after <= res.criterion_after + 1e-9
    assert res2.gains_after != pytest.approx(res2.gains_before)


def test_orthogonal_layers_are_rescaled_layerwise_with_the_same_budget():
    c = _controller("orthogonal", hidden=(8, 8))
    with torch.no_grad():
        for lin, g in zip(c.layers, (0.3, 4.0, 1.5), strict=True):
            lin.gain.fill_(g)
    frames = [lin.frame.detach().clone() for lin in c.layers]
    prod0 = c.network_lipschitz_bound()
    res = rescale(c)
    assert res.granularity == "layer"
    for lin, f in zip(c.layers, frames, strict=True):
        assert torch.equal(lin.frame, f)
    assert c.network_lipschitz_bound() == pytest.approx(prod0, rel=1e-12)
    assert res.criterion_after < res.criterion_before
    for s in res.scales:
        assert np.ptp(s) == 0.0
    with pytest.raises(LipnetArgument, match="orthogonal"):
        rescale(c, granularity="neuron")


def test_layer_granularity_on_plain_layers():
    c = _controller("plain")
    res = rescale(c, granularity="layer")
    assert all(np.ptp(s) == 0.0 for s in res.scales)
    full = rescale(_controller("plain"))
    assert full.criterion_after <= res.criterion_after + 1e-9


def test_references_identity_custom_and_fisher():
    c = _controller("plain")
    ws = layer_weights(c)
    ones = [(np.ones_like(w), np.ones_like(b)) for w, b in ws]
    a = rescale(_controller("plain"), reference="identity")
    b = rescale(_controller("plain"), reference=ones)
    for sa, sb in zip(a.scales, b.scales, strict=True):
        np.testing.assert_allclose(sa, sb, rtol=1e-12)
    # a reference equal to the current diagonal is already aligned: nothing moves
    g = path_magnitude_diag(ws)
    same = rescale(c, reference=g)
    assert same.criterion_before == pytest.approx(0.0, abs=1e-8)
    assert np.max(np.abs(np.log(np.concatenate(same.scales)))) < 1e-12
    # data-dependent kernel: function preserved, criterion improves
    x = torch.randn(50, 3, dtype=torch.float64)
    with torch.no_grad():
        y0 = c(x)
    res = rescale(c, kernel="fisher", states=x.numpy())
    with torch.no_grad():
        assert torch.allclose(c(x), y0, rtol=0, atol=1e-10)
    assert res.criterion_after < res.criterion_before


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 1000), zscale=st.floats(0.1, 3.0))
def test_fisher_diag_matches_autograd_and_transforms_like_g(seed, zscale):
    rng = np.random.default_rng(seed)
    ws = [(rng.normal(size=(5, 3)), rng.normal(size=5)), (rng.normal(size=(4, 5)), rng.normal(size=4)),
          (rng.normal(size=(2, 4)), rng.normal(size=2))]
    x = rng.normal(size=(7, 3))
    fd = fisher_diag(ws, x)
    params = [torch.tensor(t, requires_grad=True) for pair in ws for t in pair]
    acc = [torch.zeros_like(p) for p in params]
    for xi in torch.tensor(x):
        for k in range(2):
            h = xi
            for i in range(3):
                h = params[2 * i] @ h + params[2 * i + 1]
                if i < 2:
                    h = torch.relu(h)
            grads = torch.autograd.grad(h[k], params)
            acc = [a + gr**2 for a, gr in zip(acc, grads, strict=True)]
    for i, (fw, fb) in enumerate(fd):
        np.testing.assert_allclose(fw, acc[2 * i].numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(fb, acc[2 * i + 1].numpy(), rtol=1e-10, atol=1e-12)
    z = [rng.normal(size=5) * zscale, rng.normal(size=4) * zscale]
    fd2 = fisher_diag(rescale_weights(ws, z), x)
    zs = [np.zeros(3), *z, np.zeros(2)]
    for k, ((aw, ab), (bw, bb)) in enumerate(zip(fd, fd2, strict=True)):
        np.testing.assert_allclose(bw, aw * np.exp(-zs[k + 1][:, None] + zs[k][None, :]), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(bb, ab * np.exp(-zs[k + 1]), rtol=1e-9, atol=1e-12)


def test_dead_neurons_do_not_break_the_solver():
    c = _controller("plain", hidden=(6, 6))
    with torch.no_grad():
        c.layers[1].raw_weight[:, 2] = 0.0  # neuron 2 of hidden layer 1 feeds nothing
        c.layers[0].raw_weight[3, :] = 0.0  # neuron 3 of hidden layer 1 receives only its bias
        c.layers[0].bias[3] = 0.0
    x = torch.randn(50, 3, dtype=torch.float64)
    with torch.no_grad():
        y0 = c(x)
    res = rescale(c)
    with torch.no_grad():
        assert torch.allclose(c(x), y0, rtol=0, atol=1e-10)
    assert np.all(np.isfinite(np.concatenate(res.scales)))
    assert np.all(np.diff(res.criterion_history) <= 1e-9 * np.abs(res.criterion_history[0]))


def test_float32_controller_is_rescaled_to_float32_accuracy():
    torch.manual_seed(3)
    c = Controller(4, 1, (32, 32), layer="plain")
    x = torch.randn(64, 4)
    with torch.no_grad():
        y0 = c(x)
    rescale(c)
    assert c.layers[0].raw_weight.dtype == torch.float32
    with torch.no_grad():
        assert torch.allclose(c(x), y0, rtol=1e-4, atol=1e-5)


def test_bad_arguments_are_refused_with_a_clear_message():
    with pytest.raises(LipnetArgument, match="ReLU"):
        rescale(Controller(2, 1, (4,), activation="tanh"))
    with pytest.raises(LipnetArgument, match="states"):
        rescale(Controller(2, 1, (4,)), kernel="fisher")
    with pytest.raises(ValueError, match="tol"):
        rescale(Controller(2, 1, (4,)), tol=0)
    with pytest.raises(ValueError, match="reference"):
        rescale(Controller(2, 1, (4,)), reference="fisher")
    with pytest.raises(LipnetArgument, match="Controller"):
        rescale(torch.nn.Linear(2, 2))
    empty = rescale(Controller(2, 1, ()))
    assert empty.iterations == 0 and empty.converged


@pytest.mark.parametrize("layer", ["frobenius", "spectral"])
def test_budget_anchor_is_at_least_as_good_as_the_layerwise_rescaling(layer):
    # Orthogonal init: any per-neuron rescaling raises Π σ_max, so the budget forces the layer-wise anchor.
    torch.manual_seed(0)
    c = Controller(4, 1, (16, 16), layer=layer, gains=[2.0, 1.0, 0.5]).double()
    x = torch.randn(64, 4, dtype=torch.float64)
    with torch.no_grad():
        y0 = c(x)
    prod0 = c.network_lipschitz_bound()
    layerwise = rescale(copy.deepcopy(c), granularity="layer")
    res = rescale(c)
    assert c.network_lipschitz_bound() <= prod0 * (1 + 1e-10)
    assert res.criterion_after <= layerwise.criterion_after + 1e-9
    assert res.criterion_after < res.criterion_before
    with torch.no_grad():
        assert torch.allclose(c(x), y0, rtol=0, atol=1e-10)
    if layer == "spectral":
        assert res.anchor == "layer"


def test_bias_free_controller_counts_only_its_weights():
    torch.manual_seed(0)
    c = Controller(3, 2, (6, 5), layer="plain", bias=False).double()
    with torch.no_grad():
        for lin in c.layers:
            lin.raw_weight.mul_(torch.exp(torch.randn(lin.raw_weight.shape[0], 1, dtype=torch.float64)))
    ws = [(lin.raw_weight.detach().numpy().copy(), None) for lin in c.layers]
    g = [(gw, np.zeros_like(gb)) for gw, gb in path_magnitude_diag(ws)]
    x = torch.randn(32, 3, dtype=torch.float64)
    with torch.no_grad():
        y0 = c(x)
    res = rescale(c, tol=1e-9, max_sweeps=1000)
    assert res.criterion_before == pytest.approx(rescaling_criterion(g), rel=1e-12)
    with torch.no_grad():
        assert torch.allclose(c(x), y0, rtol=0, atol=1e-10)
    assert all(lin.bias is None for lin in c.layers)
