"""Plants: dynamics vs solve_ivp, ZOH vs control.c2d, linearisation, LQR, rollouts and their gradients."""

import math
import warnings

import control
import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import plants

ODE_NAMES = ["pendulum", "cartpole", "quadrotor2d", "dcmotor", "msd", "vanderpol", "ballbeam"]
ALL_NAMES = [*ODE_NAMES, "double_integrator"]


# Independent numpy right-hand sides written from each docstring's equations (not from the torch code).
def _rhs(name, p):
    if name == "pendulum":
        return lambda x, u: [x[1], (p["m"] * p["g"] * p["l"] * math.sin(x[0]) - p["b"] * x[1] + u[0])
                             / (p["m"] * p["l"] ** 2)]
    if name == "cartpole":
        def f(x, u):
            M, m, l, g = p["M"], p["m"], p["l"], p["g"]
            s, c = math.sin(x[2]), math.cos(x[2])
            a = (u[0] + m * l * x[3] ** 2 * s) / (M + m)
            thdd = (g * s - c * a) / (l * (4 / 3 - m * c * c / (M + m)))
            return [x[1], a - m * l * thdd * c / (M + m), x[3], thdd]
        return f
    if name == "quadrotor2d":
        return lambda x, u: [x[1], math.sin(x[4]) * (u[0] + u[1]) / p["m"], x[3],
                             math.cos(x[4]) * (u[0] + u[1]) / p["m"] - p["g"], x[5],
                             p["L"] / math.sqrt(2) * (u[1] - u[0]) / p["Iyy"]]
    if name == "dcmotor":
        return lambda x, u: [x[1], (p["K"] * x[2] - p["b"] * x[1]) / p["J"],
                             (u[0] - p["R"] * x[2] - p["K"] * x[1]) / p["L"]]
    if name == "msd":
        return lambda x, u: [x[1], (u[0] - p["k"] * x[0] - p["k3"] * x[0] ** 3 - p["c"] * x[1]) / p["m"]]
    if name == "vanderpol":
        return lambda x, u: [x[1], p["mu"] * (1 - x[0] ** 2) * x[1] - x[0] + u[0]]
    if name == "ballbeam":
        def f(x, u):
            m, R, J, g = p["m"], p["R"], p["J"], p["g"]
            jb = 0.4 * m * R * R
            r, rd, a, ad = x
            rdd = (m * r * ad ** 2 - m * g * math.sin(a)) / (jb / R ** 2 + m)
            add = (u[0] - 2 * m * r * rd * ad - m * g * r * math.cos(a)) / (m * r * r + J + jb)
            return [rd, rdd, ad, add]
        return f
    raise KeyError(name)


def _inputs(plant, steps, batch, gen):
    """Random piecewise-constant inputs inside the actuator limits (around u_eq)."""
    lo = plant.u_low if plant.u_low is not None else plant.u_eq - 1
    hi = plant.u_high if plant.u_high is not None else plant.u_eq + 1
    mid, half = (lo + hi) / 2, (hi - lo) / 2
    e = 2 * torch.rand(steps, batch, plant.n_u, generator=gen, dtype=torch.float64) - 1
    return torch.as_tensor(mid) + 0.5 * torch.as_tensor(half) * e


@pytest.mark.parametrize("name", ODE_NAMES)
@pytest.mark.parametrize("substeps,tol", [(None, 2e-5), (8, 2e-8)])
def test_builtin_matches_solve_ivp(name, substeps, tol):
    plant = plants.load(name) if substeps is None else plants.load(name, substeps=substeps)
    gen = torch.Generator().manual_seed(1)
    steps, batch = 25, 2
    x = plant.sample_initial(batch, "train", generator=gen, dtype=torch.float64)
    us = _inputs(plant, steps, batch, gen)
    f = _rhs(name, plant.params)
    ref = x.numpy().copy()
    scale = np.abs(ref).max() + 1.0
    for t in range(steps):
        x = plant.step(x, us[t])
        for b in range(batch):
            sol = solve_ivp(lambda _, s, ub=us[t, b].numpy(): f(s, ub), (0, plant.dt), ref[b],
                            method="DOP853", rtol=1e-12, atol=1e-12)
            ref[b] = sol.y[:, -1]
        scale = max(scale, np.abs(ref).max())
    np.testing.assert_allclose(x.numpy(), ref, atol=tol * scale, rtol=0)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_step_dtypes_shapes_and_differentiable(name):
    plant = plants.load(name)
    for dtype in (torch.float32, torch.float64):
        x = plant.sample_initial(5, dtype=dtype).requires_grad_()
        u = torch.as_tensor(plant.u_eq, dtype=dtype).expand(5, -1).clone().requires_grad_()
        y = plant.step(x, u)
        assert y.dtype == dtype and y.shape == (5, plant.n_x)
        gx, gu = torch.autograd.grad(y.sum(), (x, u))
        assert torch.isfinite(gx).all() and gu.abs().sum() > 0
    # the equilibrium is a fixed point of the discrete model
    xe = torch.as_tensor(plant.x_eq)[None]
    ue = torch.as_tensor(plant.u_eq)[None]
    np.testing.assert_allclose(plant.step(xe, ue).numpy(), xe.numpy(), atol=1e-12)
    with pytest.raises(ValueError, match=rf"step expects x \[\.\.\., {plant.n_x}\]"):
        plant.step(torch.zeros(2, plant.n_x + 1), torch.zeros(2, plant.n_u))


@pytest.mark.parametrize("name", ALL_NAMES)
def test_spec_round_trip(name):
    plant = plants.load(name)
    assert plant.spec == name and plant.name == name
    changed = plants.load(f"{name}?dt=0.04&horizon=17")
    assert changed.spec == f"{name}?dt=0.04&horizon=17"
    again = plants.load(changed.spec)
    assert (again.dt, again.horizon) == (0.04, 17)
    x = changed.sample_initial(4, dtype=torch.float64)
    u = torch.as_tensor(changed.u_eq).expand(4, -1) + 0.1
    assert torch.equal(changed.step(x, u), again.step(x, u))


def test_physical_overrides_and_spec():
    p = plants.load("cartpole?m=0.2", u_max=5)
    assert p.params["m"] == 0.2 and p.u_high[0] == 5.0 and p.spec == "cartpole?m=0.2&u_max=5"
    assert plants.load(p.spec).params == p.params
    q = plants.CartPole(l=0.25, q=[1, 2, 3, 4])
    assert q.spec == "cartpole?l=0.25&q=1,2,3,4"
    np.testing.assert_array_equal(plants.load(q.spec).Q, np.diag([1.0, 2, 3, 4]))


def test_zoh_matches_control_c2d():
    rng = np.random.default_rng(3)
    A, B = rng.normal(size=(4, 4)), rng.normal(size=(4, 2))
    sys = control.ss(A, B, np.eye(4), np.zeros((4, 2)))
    for dt in (0.01, 0.1, 0.5):
        ref = control.c2d(sys, dt, method="zoh")
        p = plants.from_lti(sys, dt=dt)
        np.testing.assert_allclose(p.A, ref.A, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(p.B, ref.B, rtol=1e-10, atol=1e-12)
        assert p.dt == dt
    tf = control.tf([1.0], [1.0, 0.4, 2.0])
    p = plants.from_lti(tf, dt=0.1)
    ref = control.c2d(control.ss(tf), 0.1, method="zoh")
    np.testing.assert_allclose(p.A, ref.A, atol=1e-12)
    assert p.dt == 0.1 and p.n_x == 2 and p.spec == ""
    p = plants.from_lti(sys)
    assert p.dt == plants.DEFAULT_DT


def test_discrete_lti_keeps_its_rate_and_rejects_another():
    sysd = control.ss([[1.0, 0.1], [0.0, 1.0]], [[0.0], [0.1]], np.eye(2), 0, 0.1)
    p = plants.from_lti(sysd)
    np.testing.assert_array_equal(p.A, sysd.A)
    x, u = torch.randn(3, 2, dtype=torch.float64), torch.randn(3, 1, dtype=torch.float64)
    np.testing.assert_allclose(p.step(x, u).numpy(), x.numpy() @ p.A.T + u.numpy() @ p.B.T, atol=1e-14)
    with pytest.raises(plants.PlantSpecError, match=r"discrete with dt=0.1.*cannot resample"):
        plants.from_lti(sysd, dt=0.2)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_linearize_matches_finite_differences(name):
    plant = plants.load(name)
    gen = torch.Generator().manual_seed(2)
    for at_eq in (True, False):
        x0 = torch.as_tensor(plant.x_eq) if at_eq else plant.sample_initial(1, generator=gen, dtype=torch.float64)[0]
        u0 = torch.as_tensor(plant.u_eq)
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # jacrev must not have fallen back on a built-in
            sys = plants.linearize(plant, x0, u0)
        rm = plants.linearize(plant, x0, u0, method="batched")  # the plain reverse-mode path agrees exactly
        np.testing.assert_allclose(rm.A, sys.A, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(rm.B, sys.B, rtol=1e-12, atol=1e-14)
        assert sys.dt == plant.dt and np.array_equal(sys.C, np.eye(plant.n_x))
        h = 1e-6
        fd_A = np.stack([(plant.step((x0 + h * e)[None], u0[None]) - plant.step((x0 - h * e)[None], u0[None]))[0]
                         .numpy() / (2 * h) for e in torch.eye(plant.n_x, dtype=torch.float64)], 1)
        fd_B = np.stack([(plant.step(x0[None], (u0 + h * e)[None]) - plant.step(x0[None], (u0 - h * e)[None]))[0]
                         .numpy() / (2 * h) for e in torch.eye(plant.n_u, dtype=torch.float64)], 1)
        np.testing.assert_allclose(sys.A, fd_A, rtol=1e-6, atol=1e-7 * max(1, np.abs(fd_A).max()))
        np.testing.assert_allclose(sys.B, fd_B, rtol=1e-6, atol=1e-7 * max(1, np.abs(fd_B).max()))


def test_linearize_falls_back_when_jacrev_cannot_transform_the_step():
    class Spring(torch.autograd.Function):  # old-style (ctx in forward): autograd yes, functorch transforms no
        @staticmethod
        def forward(ctx, q):
            ctx.save_for_backward(q)
            return 2.0 * q + q ** 3

        @staticmethod
        def backward(ctx, g):
            (q,) = ctx.saved_tensors
            return g * (2.0 + 3.0 * q ** 2)

    def f(x, u):
        return torch.stack([x[..., 1], -Spring.apply(x[..., 0]) + u[..., 0]], -1)

    plant = plants.FunctionPlant(f, n_x=2, n_u=1, dt=0.1, name="itemplant")
    with pytest.warns(RuntimeWarning, match="jacrev could not differentiate itemplant.step .*reverse mode"):
        sys = plants.linearize(plant)
    ref = plants.linearize(plant, method="batched")
    np.testing.assert_allclose(sys.A, ref.A, rtol=0, atol=0)
    exact = control.c2d(control.ss([[0, 1], [-2, 0]], [[0], [1]], np.eye(2), np.zeros((2, 1))), 0.1)
    np.testing.assert_allclose(sys.A, exact.A, rtol=1e-5)  # RK4 over one 0.1 s step: O(h^5) from ZOH
    with pytest.raises(ValueError, match="method must be 'jacrev' or 'batched'"):
        plants.linearize(plant, method="forward")


def test_cartpole_lqr_matches_field_notes():
    L = plants.lqr(plants.load("cartpole"))
    np.testing.assert_allclose(L.K, [[-2.78, -5.15, -43.88, -11.58]], atol=0.006)
    assert np.abs(L.poles).max() == pytest.approx(0.979, abs=1e-3)
    J = L.cost(torch.tensor([[0.5, 0.0, 0.1, 0.0]], dtype=torch.float64))
    assert J.item() == pytest.approx(58.8, abs=0.05)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_lqr_policy_stabilises_eval_distribution(name):
    plant = plants.load(name)
    L = plants.lqr(plant)
    x0 = plant.sample_initial(512, "eval", generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    with torch.no_grad():
        r = plants.rollout(plant, L.policy, x0)
    assert r.states.shape == (plant.horizon + 1, 512, plant.n_x) and r.actions.shape == (plant.horizon, 512, plant.n_u)
    assert torch.isfinite(r.cost).all()
    final = (r.states[-1] - torch.as_tensor(plant.x_eq)).abs() / torch.as_tensor(plant.init_eval.scale)
    assert final.max() < 0.05, f"{name}: final deviation {final.max():.3g} of the eval box"
    if plant.u_high is not None:
        assert (r.actions <= torch.as_tensor(plant.u_high) + 1e-12).all()
        assert (r.actions >= torch.as_tensor(plant.u_low) - 1e-12).all()


def test_lqr_rollout_cost_equals_optimum_on_linear_plant():
    rng = np.random.default_rng(5)
    A = rng.normal(size=(3, 3)) * 0.6
    B = rng.normal(size=(3, 2))
    plant = plants.LinearPlant(A, B, dt=0.1, Q=np.diag([1.0, 2.0, 0.5]), R=np.diag([0.3, 1.0]))
    L = plants.lqr(plant)
    x0 = torch.as_tensor(rng.normal(size=(6, 3)))
    for T in (1, 7, 40):
        r = plants.rollout(plant, L.policy, x0, horizon=T, terminal="lqr")
        torch.testing.assert_close(r.cost, L.cost(x0), rtol=1e-10, atol=1e-12)
    # the infinite-horizon sum without the terminal term converges to the same value
    r = plants.rollout(plant, L.policy, x0, horizon=600)
    torch.testing.assert_close(r.cost, L.cost(x0), rtol=1e-8, atol=1e-10)
    di = plants.load("double_integrator")
    L = plants.lqr(di)
    r = plants.rollout(di, L.policy, x0[:, :2], horizon=5, terminal=L.P)
    torch.testing.assert_close(r.cost, L.cost(x0[:, :2]), rtol=1e-10, atol=1e-12)


def test_lqr_cost_close_to_simulated_on_nonlinear_plant():
    plant = plants.load("cartpole")
    L = plants.lqr(plant, clip=False)
    x0 = torch.tensor([[0.05, 0.0, 0.02, 0.0], [-0.02, 0.03, -0.01, 0.02]], dtype=torch.float64)
    r = plants.rollout(plant, L.policy, x0, horizon=900)
    torch.testing.assert_close(r.cost, L.cost(x0), rtol=2e-3, atol=0)


def test_lqr_policy_clips_and_float32():
    plant = plants.load("pendulum")
    L = plants.lqr(plant)
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.01, 0.0]])
    u = L.policy(x)
    assert u.dtype == torch.float32
    np.testing.assert_allclose(u[:2, 0].numpy(), [-5.0, 5.0])
    np.testing.assert_allclose(u[2].numpy(), -(L.K @ np.array([0.01, 0.0])), rtol=1e-5)
    assert L.unclipped()(x)[0, 0] < -5.0


def _mlp_cost(plant, horizon):
    def cost(x0, w1, b1, w2):
        def policy(x):
            return torch.tanh(x @ w1 + b1) @ w2
        return plants.rollout(plant, policy, x0, horizon=horizon).cost
    return cost


@pytest.mark.parametrize("name", ["pendulum", "cartpole", "double_integrator"])
def test_rollout_gradients_match_finite_differences(name):
    plant = plants.load(name, u_max=1000) if name != "double_integrator" else plants.load(name)
    gen = torch.Generator().manual_seed(6)
    n, m = plant.n_x, plant.n_u
    args = (plant.sample_initial(2, generator=gen, dtype=torch.float64),
            0.3 * torch.randn(n, 5, generator=gen, dtype=torch.float64),
            0.1 * torch.randn(5, generator=gen, dtype=torch.float64),
            0.3 * torch.randn(5, m, generator=gen, dtype=torch.float64))
    args = tuple(a.requires_grad_() for a in args)
    assert torch.autograd.gradcheck(_mlp_cost(plant, 6), args, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_rollout_no_grad_and_horizon_default():
    plant = plants.load("msd")
    L = plants.lqr(plant)
    x0 = plant.sample_initial(3, dtype=torch.float64)
    with torch.no_grad():
        r = plants.rollout(plant, L.policy, x0)
    assert not r.cost.requires_grad and r.states.shape[0] == plant.horizon + 1
    r0 = plants.rollout(plant, L.policy, x0, horizon=0, terminal="lqr")
    torch.testing.assert_close(r0.cost, L.cost(x0))
    with pytest.raises(ValueError, match=r"policy must map \[b, 2\] to \[b, 1\]"):
        plants.rollout(plant, lambda x: x, x0, horizon=2)
    with pytest.raises(ValueError, match="terminal must be None, a matrix P or 'lqr'"):
        plants.rollout(plant, L.policy, x0, horizon=2, terminal="bad")


def test_rollout_is_twice_differentiable():
    """Hessian-vector products through a rollout (second-order optimisers) match differences of gradients."""
    plant = plants.load("cartpole")
    gen = torch.Generator().manual_seed(7)
    x0 = plant.sample_initial(3, generator=gen, dtype=torch.float64)
    w = (0.3 * torch.randn(4, 5, generator=gen, dtype=torch.float64)).requires_grad_()
    d = torch.randn(4, 5, generator=gen, dtype=torch.float64)

    def grad_at(weights, create_graph=False):
        cost = plants.rollout(plant, lambda x: torch.tanh(x @ weights).sum(1, keepdim=True), x0, horizon=8).cost
        return torch.autograd.grad(cost.sum(), weights, create_graph=create_graph)[0]

    (hvp,) = torch.autograd.grad((grad_at(w, create_graph=True) * d).sum(), w)
    eps = 1e-6
    plus, minus = (w.detach() + eps * d).requires_grad_(), (w.detach() - eps * d).requires_grad_()
    fd = (grad_at(plus) - grad_at(minus)) / (2 * eps)
    torch.testing.assert_close(hvp, fd, rtol=1e-5, atol=1e-6)
