import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lipnet.exceptions import LipnetArgument, LipnetDimension
from lipnet.nn import Controller
from lipnet.pathlift import (
    as_weights,
    brute_force_path_magnitude_diag,
    brute_force_path_norm,
    enumerate_paths,
    input_path_matrix,
    layer_weights,
    path_magnitude_diag,
    path_norm,
)
from lipnet.pathlift.norms import path_lipschitz_bound
from lipnet.pathlift.rescale import rescale_weights


def _net(widths, seed, scale=1.0, bias_scale=1.0):
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(widths[k + 1], widths[k])) * scale, rng.normal(size=widths[k + 1]) * bias_scale)
            for k in range(len(widths) - 1)]


def _forward(ws, x, act="relu"):
    h = x
    for k, (w, b) in enumerate(ws):
        h = h @ w.T + b
        if k < len(ws) - 1:
            h = np.maximum(h, 0) if act == "relu" else np.tanh(h)
    return h


tiny_widths = st.lists(st.integers(1, 3), min_size=2, max_size=5)


@settings(max_examples=40, deadline=None)
@given(widths=tiny_widths, seed=st.integers(0, 10_000), q=st.sampled_from([1.0, 2.0, 0.5, 3.0, math.inf]),
       biases=st.booleans())
def test_path_norm_equals_brute_force_enumeration(widths, seed, q, biases):
    ws = _net(widths, seed)
    fast, slow = path_norm(ws, q, biases=biases), brute_force_path_norm(ws, q, biases=biases)
    assert fast == pytest.approx(slow, rel=1e-12)


def test_path_norm_known_value():
    # 1-1-1 net: paths x→W1→W2 (3·2), b1→W2 (5·2), b2 (7): ℓ1 = 6 + 10 + 7, ℓ2 = sqrt(36 + 100 + 49).
    ws = [(np.array([[3.0]]), np.array([5.0])), (np.array([[-2.0]]), np.array([7.0]))]
    assert path_norm(ws, 1) == pytest.approx(23.0)
    assert path_norm(ws, 2) == pytest.approx(math.sqrt(185.0))
    assert path_norm(ws, math.inf) == pytest.approx(10.0)
    assert path_norm(ws, 1, biases=False) == pytest.approx(6.0)
    values, paths = enumerate_paths(ws)
    assert sorted(np.abs(values).tolist()) == [6.0, 7.0, 10.0]
    assert len(paths) == 3


@settings(max_examples=30, deadline=None)
@given(widths=tiny_widths, seed=st.integers(0, 10_000))
def test_path_magnitude_diag_equals_brute_force_and_autograd(widths, seed):
    ws = _net(widths, seed)
    fast = path_magnitude_diag(ws)
    slow = brute_force_path_magnitude_diag(ws)
    for (fw, fb), (sw, sb) in zip(fast, slow, strict=True):
        np.testing.assert_allclose(fw, sw, rtol=1e-11, atol=1e-300)
        np.testing.assert_allclose(fb, sb, rtol=1e-11, atol=1e-300)
    # The authors' recipe: gradient of the summed output of the squared-weight net on an all-ones input.
    sq = [(torch.tensor(w**2, requires_grad=True), torch.tensor(b**2, requires_grad=True)) for w, b in ws]
    h = torch.ones(ws[0][0].shape[1], dtype=torch.float64)
    for w, b in sq:
        h = w @ h + b
    grads = torch.autograd.grad(h.sum(), [t for pair in sq for t in pair])
    for k, (fw, fb) in enumerate(fast):
        np.testing.assert_allclose(fw, grads[2 * k].numpy(), rtol=1e-12)
        np.testing.assert_allclose(fb, grads[2 * k + 1].numpy(), rtol=1e-12)


@settings(max_examples=30, deadline=None)
@given(widths=tiny_widths, seed=st.integers(0, 10_000))
def test_network_factors_through_path_lifting(widths, seed):
    # f_k(x) = Σ_{paths p ending at k} Φ_p · (x_j or 1) · Π 1[neuron on p active]: checks the enumeration.
    ws = _net(widths, seed)
    values, paths = enumerate_paths(ws)
    x = np.random.default_rng(seed + 1).normal(size=widths[0])
    pre, h = [], x
    for k, (w, b) in enumerate(ws):
        h = w @ h + b
        pre.append(h)
        if k < len(ws) - 1:
            h = np.maximum(h, 0)
    out = np.zeros(widths[-1])
    for v, p in zip(values, paths, strict=True):
        last = p[-1]
        end = last[2]
        if p[0][0] == "W":
            v = v * x[p[0][3]]
        active = all(pre[ref[1]][ref[2]] > 0 for ref in p if ref[1] < len(ws) - 1)
        out[end] += v * active
    np.testing.assert_allclose(out, h, rtol=1e-10, atol=1e-10)


@settings(max_examples=40, deadline=None)
@given(widths=st.lists(st.integers(1, 6), min_size=2, max_size=5), seed=st.integers(0, 10_000),
       zscale=st.floats(0.01, 5.0))
def test_path_norms_invariant_under_any_rescaling(widths, seed, zscale):
    ws = _net(widths, seed)
    rng = np.random.default_rng(seed + 7)
    z = [rng.normal(size=n) * zscale for n in widths[1:-1]]
    new = rescale_weights(ws, z)
    for q in (1.0, 2.0, math.inf):
        for biases in (True, False):
            assert path_norm(new, q, biases) == pytest.approx(path_norm(ws, q, biases), rel=1e-10)
    np.testing.assert_allclose(input_path_matrix(new), input_path_matrix(ws), rtol=1e-10, atol=1e-300)
    # g transforms as g ⊙ e^{Bz}: incoming × e^{−z}, outgoing × e^{+z}.
    g0, g1 = path_magnitude_diag(ws), path_magnitude_diag(new)
    zs = [np.zeros(widths[0])] + z + [np.zeros(widths[-1])]
    for k, ((aw, ab), (bw, bb)) in enumerate(zip(g0, g1, strict=True)):
        np.testing.assert_allclose(bw, aw * np.exp(-zs[k + 1][:, None] + zs[k][None, :]), rtol=1e-10)
        np.testing.assert_allclose(bb, ab * np.exp(-zs[k + 1]), rtol=1e-10)
    # And the function is unchanged (ReLU is positively homogeneous).
    x = rng.normal(size=(16, widths[0]))
    np.testing.assert_allclose(_forward(new, x), _forward(ws, x), rtol=1e-10, atol=1e-10)


def test_layer_weights_of_controller_are_unfolded():
    c = Controller(3, 2, (5, 4), layer="plain", state_scale=[1, 2, 4], action_scale=[3, 1]).double()
    lw = layer_weights(c)
    np.testing.assert_allclose(lw[0][0], c.layers[0].weight.detach().numpy())
    folded = c.folded_weights()
    np.testing.assert_allclose(folded[0][0], lw[0][0] / np.array([1, 2, 4])[None, :])


def test_bad_inputs_are_named():
    with pytest.raises(LipnetDimension, match="previous layer"):
        as_weights([(np.ones((3, 2)), np.ones(3)), (np.ones((1, 4)), np.ones(1))])
    with pytest.raises(LipnetDimension, match="bias"):
        as_weights([(np.ones((3, 2)), np.ones(2))])
    with pytest.raises(LipnetArgument, match="layer_weights"):
        path_norm(Controller(2, 1, (4,)))
    with pytest.raises(ValueError, match="q must be positive"):
        path_norm([(np.ones((1, 1)), None)], q=0)
    with pytest.raises(LipnetDimension, match="max_paths"):
        enumerate_paths(_net([8, 30, 30, 30, 2], 0))


# --- the certificate method ----------------------------------------------------------------------------------

def _max_jacobian_norm(ws, xs, act):
    best = 0.0
    for x in xs:
        j, h = np.eye(len(x)), x
        for k, (w, b) in enumerate(ws):
            pre = w @ h + b
            j = w @ j
            if k < len(ws) - 1:
                s = (pre > 0).astype(float) if act == "relu" else 1 - np.tanh(pre) ** 2
                h = np.maximum(pre, 0) if act == "relu" else np.tanh(pre)
                j = s[:, None] * j
        best = max(best, np.linalg.norm(j, 2))
    return best


@settings(max_examples=40, deadline=None)
@given(widths=st.lists(st.integers(1, 8), min_size=2, max_size=5), seed=st.integers(0, 10_000),
       act=st.sampled_from(["relu", "tanh"]), spread=st.floats(0.1, 10.0))
def test_path_bound_dominates_empirical_jacobian_norms(widths, seed, act, spread):
    ws = _net(widths, seed)
    res = path_lipschitz_bound(ws, activation=act)
    assert res["sound"] and res["method"] == "path-norm"
    xs = np.random.default_rng(seed + 3).normal(size=(64, widths[0])) * spread
    assert _max_jacobian_norm(ws, xs, act) <= res["value"] * (1 + 1e-10)
    # and the finite-difference form of the claim on random pairs
    ys = xs[::-1] + 1e-3
    fx, fy = _forward(ws, xs, act), _forward(ws, ys, act)
    ratio = np.linalg.norm(fx - fy, axis=1) / np.linalg.norm(xs - ys, axis=1)
    assert ratio.max() <= res["value"] * (1 + 1e-10)
    assert res["value"] <= res["frobenius"] * (1 + 1e-12) <= res["path_norm_l1"] * (1 + 1e-12)


def test_path_bound_is_exact_for_nonnegative_single_path_structure():
    # All weights ≥ 0 and every ReLU active at x = 1: J(1) = M, so the bound is attained.
    rng = np.random.default_rng(0)
    ws = [(rng.uniform(0.1, 1, size=(4, 3)), np.ones(4)), (rng.uniform(0.1, 1, size=(2, 4)), np.zeros(2))]
    res = path_lipschitz_bound(ws)
    assert res["value"] == pytest.approx(_max_jacobian_norm(ws, [np.ones(3)], "relu"), rel=1e-12)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), half=st.floats(0.05, 3.0))
def test_region_bound_is_sound_on_the_box_and_no_looser(seed, half):
    ws = _net([3, 8, 8, 2], seed, bias_scale=2.0)
    rng = np.random.default_rng(seed)
    centre = rng.normal(size=3)
    res = path_lipschitz_bound(ws, region=(centre - half, centre + half))
    glob = path_lipschitz_bound(ws)
    assert res["value"] <= glob["value"] * (1 + 1e-12)
    assert "box" in res["region"] and glob["region"].startswith("global")
    xs = centre + rng.uniform(-half, half, size=(256, 3))
    assert _max_jacobian_norm(ws, xs, "relu") <= res["value"] * (1 + 1e-10)


def test_path_bound_is_rescaling_invariant_and_bounds_a_controller():
    torch.manual_seed(1)
    c = Controller(4, 2, (16, 16), layer="plain", state_scale=[1, 2, 0.5, 3], action_scale=[2, 0.3],
                   u_low=-1, u_high=1).double()
    ws = c.folded_weights()
    res = path_lipschitz_bound(ws)
    z = [np.random.default_rng(2).normal(size=16) * 2, np.random.default_rng(3).normal(size=16)]
    assert path_lipschitz_bound(rescale_weights(ws, z))["value"] == pytest.approx(res["value"], rel=1e-10)
    xs = torch.randn(64, 4, dtype=torch.float64) * 2
    for x in xs:
        j = torch.autograd.functional.jacobian(c, x[None])[0, :, 0, :]
        assert torch.linalg.matrix_norm(j, ord=2) <= res["value"] * (1 + 1e-10)


def test_groupsort_is_reported_unsound():
    res = path_lipschitz_bound(_net([2, 4, 1], 0), activation="groupsort")
    assert res["sound"] is False and "GroupSort" in res["notes"]
