"""The automatic Lipschitz budget provably admits the LQR gain, and the controller keeps the equilibrium exactly.

The proof is constructive: within the per-layer gains that `build_controller` chose, we write Frobenius-layer
weights whose network has exactly the LQR gain as its Jacobian at the equilibrium (live channels along K̂'s
singular vectors, surplus norm parked on hidden units nothing reads), then check it with autograd.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import plants
from lipnet.train.plan import build_controller, lqr_admitting_factor, plan_controller


def _realise_lqr_gain(controller, K_hat: np.ndarray, activation: str) -> None:
    """Set every layer's direction (its Frobenius norm stays its gain g_l) so that ∂y/∂z at z = 0 equals K_hat."""
    layers = list(controller.layers)
    D = len(layers)
    m, nf = layers[-1].out_features, layers[0].in_features
    U, sig, Vt = np.linalg.svd(K_hat)
    r = int(np.sum(sig > 1e-12 * sig[0]))
    gains = [float(lin.gain) for lin in layers]
    c = [g / np.sqrt(r) for g in gains[:-1]]
    c_last = sig[0] / np.prod(c)
    sig_hat = sig[:r] / sig[0]
    need = c_last * np.linalg.norm(sig_hat)
    assert need <= gains[-1] * (1 + 1e-9), "the budget does not admit the LQR gain"
    weights = []
    for i, lin in enumerate(layers):
        w = np.zeros((lin.out_features, lin.in_features))
        if i == 0:
            w[:r, :K_hat.shape[1]] = c[0] * Vt[:r]
        elif i < D - 1:
            w[:r, :r] = c[i] * np.eye(r)
        else:
            w[:, :r] = c_last * U[:, :r] * sig_hat
            spare = gains[-1] ** 2 - need**2  # park the surplus on a hidden unit nothing feeds (output stays 0)
            if spare > 0:
                w[0, -1] = np.sqrt(spare)
            weights.append(w)
            continue
        spare = gains[i] ** 2 - np.sum(w**2)
        if i == 0 and spare > 0:  # on the last hidden unit, which the next layer does not read
            w[-1, 0] = np.sqrt(spare)
        elif 0 < i < D - 1 and spare > 0:  # reading a unit fed nothing (its output is 0)
            w[-1, -2] = np.sqrt(spare)
        weights.append(w)
    with torch.no_grad():
        for i, (lin, w) in enumerate(zip(layers, weights, strict=True)):
            lin.direction.copy_(torch.as_tensor(w, dtype=lin.direction.dtype))
            lin.bias.zero_()
            if activation == "relu" and i < D - 1:
                lin.bias[:r] = 1.0  # the live units sit on the linear part of the ReLU
        for lin, g in zip(layers, gains, strict=True):
            assert abs(float(torch.linalg.matrix_norm(lin.weight.double())) - g) < 1e-5 * g  # the gains unchanged
    assert m == K_hat.shape[0] and nf >= K_hat.shape[1]


@pytest.mark.parametrize("spec,activation", [("pendulum", "tanh"), ("cartpole", "tanh"), ("cartpole", "relu"),
                                             ("quadrotor2d", "tanh"), ("quadrotor2d", "relu"), ("dcmotor", "tanh")])
def test_the_auto_budget_admits_the_lqr_gain_exactly(spec, activation):
    plant = plants.load(spec)
    lqr = plants.lqr(plant)
    gen = torch.Generator().manual_seed(0)
    plan = plan_controller(plant, lqr, generator=gen, depth=3)
    ctl = build_controller(plant, plan, (16, 16), activation, "frobenius", "clip", generator=gen).double()
    K = np.asarray(lqr.K)  # u = u_eq − K (x − x_eq)
    s, a = plan.state_scale, plan.action_scale
    K_hat = -(K * s[None, :]) / a[:, None]  # in the network's coordinates: y = K_hat z
    rank = np.linalg.matrix_rank(K_hat)
    assert plan.budget >= lqr_admitting_factor(rank, 3) * np.linalg.norm(K_hat, 2) * (1 - 1e-9)
    _realise_lqr_gain(ctl, K_hat, activation)
    x_eq = torch.as_tensor(plant.x_eq, dtype=torch.float64)
    J = torch.func.jacrev(lambda x: ctl(x[None])[0])(x_eq).detach().numpy()
    np.testing.assert_allclose(J, -K, rtol=1e-6, atol=1e-9 * np.abs(K).max())
    u = ctl(x_eq[None])[0].detach()
    assert torch.equal(u, ctl.action_offset.double())  # the equilibrium action, exactly (its stored float32 value)
    np.testing.assert_allclose(u.numpy(), plant.u_eq, rtol=1e-7)


def test_the_exported_onnx_keeps_the_equilibrium(tmp_path):
    from export import export_controller, numpy_policy, session

    plant = plants.load("quadrotor2d")  # u_eq = hover thrust, far from 0: an offset would show
    gen = torch.Generator().manual_seed(1)
    lqr = plants.lqr(plant)
    plan = plan_controller(plant, lqr, generator=gen)
    ctl = build_controller(plant, plan, (16, 16), "tanh", "frobenius", "clip", generator=gen)
    with torch.no_grad():
        for lin in ctl.layers:  # a trained network: nonzero biases
            lin.bias.normal_(0, 0.5)
    path = tmp_path / "c.onnx"
    export_controller(ctl, path, plant="quadrotor2d", samples=200)
    x_eq = np.asarray(plant.x_eq, dtype=np.float32)[None]
    u_onnx = session(str(path))(x_eq[0])
    np.testing.assert_allclose(u_onnx, plant.u_eq, rtol=2e-6, atol=1e-7)  # float32 rounding only
    np.testing.assert_allclose(numpy_policy(path)(x_eq[0]), plant.u_eq, rtol=2e-7)  # its float32 output
