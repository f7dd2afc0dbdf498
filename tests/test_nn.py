import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lipnet.exceptions import LipnetDimension
from lipnet.nn import Controller


def _numpy_forward(c, x):
    h = x
    ws = c.folded_weights()
    for i, (w, b) in enumerate(ws):
        h = h @ w.T + b
        if i < len(ws) - 1:
            h = np.maximum(h, 0) if c.activation == "relu" else np.tanh(h)
    return h


@pytest.mark.parametrize("layer", ["frobenius", "spectral", "orthogonal", "plain"])
def test_folded_weights_reproduce_forward(layer):
    c = Controller(3, 2, (8, 6), layer=layer, state_scale=[1, 2, 3], state_offset=[0.1, 0, -1],
                   action_scale=[2, 0.5], action_offset=[0.3, 0.0]).double()
    x = torch.randn(20, 3, dtype=torch.float64)
    np.testing.assert_allclose(_numpy_forward(c, x.numpy()), c(x).detach().numpy(), atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(layer=st.sampled_from(["frobenius", "spectral", "orthogonal"]),
       act=st.sampled_from(["relu", "tanh", "groupsort"]), sat=st.sampled_from(["tanh", "clip", "none"]),
       n_x=st.integers(1, 5), n_u=st.integers(1, 3), width=st.sampled_from([2, 4, 8]),
       gain=st.floats(0.3, 3.0), seed=st.integers(0, 10_000))
def test_construction_bound_dominates_jacobian_norms(layer, act, sat, n_x, n_u, width, gain, seed):
    torch.manual_seed(seed)
    c = Controller(n_x, n_u, (width, width), activation=act, layer=layer, gains=gain,
                   state_scale=torch.rand(n_x) + 0.2, action_scale=torch.rand(n_u) + 0.2,
                   u_low=-1.0, u_high=1.0, saturation=sat).double()
    for p in c.parameters():  # random weights, not just the initialisation
        p.data.normal_()
    bound = c.lipschitz_bound()
    xs = torch.randn(16, n_x, dtype=torch.float64) * 3
    for x in xs:
        j = torch.autograd.functional.jacobian(c, x[None])[0, :, 0, :]
        assert torch.linalg.matrix_norm(j, ord=2) <= bound * (1 + 1e-9)


def test_saturation_respects_limits():
    c = Controller(2, 1, (4,), u_low=-2.0, u_high=3.0, action_scale=100.0)
    u = c(torch.randn(100, 2) * 100)
    assert (u >= -2).all() and (u <= 3).all()


def test_dimension_errors_are_clear():
    c = Controller(2, 1, (4,))
    with pytest.raises(LipnetDimension, match="dimension 2"):
        c(torch.randn(3, 5))
    with pytest.raises(LipnetDimension, match="state_scale has 3 entries"):
        Controller(2, 1, (4,), state_scale=[1, 2, 3])
    with pytest.raises(ValueError, match="valid: relu"):
        Controller(2, 1, (4,), activation="swish")


def test_deepcopy_keeps_manifold():
    c = Controller(2, 1, (4,))
    d = copy.deepcopy(c)
    assert d.layers[0].direction.manifold.name == "sphere"


# --- equilibrium anchor (centered) ---------------------------------------------------------------------------
@pytest.mark.parametrize("saturation", ["tanh", "clip", "none"])
@pytest.mark.parametrize("activation", ["relu", "tanh", "groupsort"])
def test_centered_controller_maps_the_equilibrium_to_the_equilibrium_input(saturation, activation):
    from lipnet.certify.empirical import network_forward
    from lipnet.certify.network import mlp_of

    torch.manual_seed(0)
    kw = dict(hidden=(8, 8), activation=activation, state_offset=[0.1, 0.2, 0.3], state_scale=[1, 2, 3],
              action_offset=[0.5, -0.25], action_scale=[2, 1], u_low=[-1, -1], u_high=[2, 1],
              saturation=saturation, periodic=(1,))
    c = Controller(3, 2, centered=True, **kw)
    with torch.no_grad():  # trained biases: the network is no longer 0 at 0
        for lin in c.layers:
            lin.bias.normal_()
    plain = Controller(3, 2, **kw)
    plain.load_state_dict(c.state_dict())
    x_eq = c.state_offset[None]
    assert torch.equal(c(x_eq), c.action_offset[None])  # exact in float32
    assert not torch.allclose(plain(x_eq), c.action_offset[None], atol=1e-4)  # the anchor is what does it
    u64 = network_forward(mlp_of(c), x_eq.double(), saturate=True)
    assert np.abs(u64.numpy() - c.action_offset.double().numpy()).max() < 1e-15
    xs = torch.randn(64, 3)  # the folded float64 weights are the same function
    assert torch.allclose(c(xs).double(), network_forward(mlp_of(c), xs.double(), saturate=True), atol=1e-5)
    assert c.lipschitz_bound() == plain.lipschitz_bound()  # a constant shift: the bound is unchanged
    again = Controller.from_config(c.config())
    again.load_state_dict(c.state_dict())
    assert torch.equal(again(xs), c(xs)) and again.centered


def test_centered_controller_refuses_an_equilibrium_input_on_the_limit():
    with pytest.raises(ValueError, match="strictly inside"):
        Controller(2, 1, u_low=[0.0], u_high=[1.0], action_offset=[0.0], saturation="tanh", centered=True)
