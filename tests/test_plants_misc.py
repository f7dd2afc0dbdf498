"""Plants: option formatting, constant caching, the optional compiled step, initial states, gym details."""

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import plants
from plants.options import format_value, parse_value


@settings(max_examples=200, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False, width=64))
def test_option_values_round_trip_exactly(v):
    assert parse_value(format_value(v)) == v


def test_option_lists_round_trip():
    assert format_value([1, 0.5, -2e-9]) == "1,0.5,-2e-09"
    assert parse_value("1,0.5,-2e-09") == [1.0, 0.5, -2e-09]
    assert format_value("0.50") == "0.5"


def test_const_cache_follows_reassignment():
    p = plants.load("msd")
    x = torch.zeros(1, 2)
    assert p.const("Q", x) is p.const("Q", x)
    assert p.const("Q", x).dtype == torch.float32 and p.const("Q", x.double()).dtype == torch.float64
    p.Q = 3 * np.eye(2)
    assert p.const("Q", x)[0, 0].item() == 3.0
    cost = p.stage_cost(torch.ones(1, 2), torch.zeros(1, 1))
    assert cost.item() == pytest.approx(6.0)


def test_caches_survive_inference_mode_then_autograd():
    p = plants.load("cartpole")
    L = plants.lqr(p)
    with torch.inference_mode():
        plants.rollout(p, L.policy, p.sample_initial(4), horizon=3)
        np.testing.assert_allclose(plants.lqr(p).K, L.K)  # linearising inside inference mode works too
    x0 = p.sample_initial(4).requires_grad_()
    cost = plants.rollout(p, L.policy, x0, horizon=3, terminal="lqr").cost.sum()
    (g,) = torch.autograd.grad(cost, x0)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_clip_per_channel_and_scalar_limits():
    q = plants.load("quadrotor2d")
    u = torch.tensor([[-1.0, 1.0]])
    np.testing.assert_allclose(q.clip(u).numpy(), [[0.0, q.u_high[1]]], rtol=1e-6)
    q.u_high = np.array([0.2, 0.3])
    np.testing.assert_allclose(q.clip(u).numpy(), [[0.0, 0.3]], rtol=1e-6)
    assert plants.load("double_integrator").clip(u[:, :1]) is not None


def test_compile_falls_back_to_eager_on_failure(monkeypatch):
    p = plants.load("pendulum")
    x, u = torch.randn(3, 2, dtype=torch.float64), torch.randn(3, 1, dtype=torch.float64)
    ref = p.step(x, u)

    def broken(fn, **kwargs):
        def run(*args):
            raise RuntimeError("no compiler")
        return run

    monkeypatch.setattr(torch, "compile", broken)
    assert p.compile() is p
    with pytest.warns(RuntimeWarning, match="torch.compile of pendulum.step failed .*no compiler.*eager"):
        out = p.step(x, u)
    torch.testing.assert_close(out, ref)
    assert p._compiled is None


@pytest.mark.slow
def test_compiled_step_matches_eager_with_gradients():
    p = plants.load("cartpole")
    x = p.sample_initial(64, dtype=torch.float64).requires_grad_()
    u = torch.randn(64, 1, dtype=torch.float64, requires_grad=True)
    ref = p.step(x, u)
    gref = torch.autograd.grad(ref.square().sum(), (x, u))
    p.compile()
    out = p.step(x, u)
    g = torch.autograd.grad(out.square().sum(), (x, u))
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(g, gref)


def test_option_help_lists_every_option():
    h = plants.CartPole.option_help()
    assert h["m"] == "pole mass [kg], default 0.1" and h["dt"] == "sample time [s], default 0.02"
    assert set(h) == {"M", "m", "l", "g", "u_max", "dt", "substeps", "horizon", "q", "r"}


def test_initial_state_distributions():
    p = plants.load("cartpole")
    gen = torch.Generator().manual_seed(0)
    tr = p.sample_initial(4000, "train", generator=gen)
    ev = p.sample_initial(4000, "eval", generator=gen)
    assert (tr.abs() <= torch.as_tensor(p.init_train.scale, dtype=torch.float32) + 1e-6).all()
    assert (ev.abs().amax(0) > tr.abs().amax(0)).all()
    lin = plants.load("double_integrator?x0_std=0.5")
    s = lin.sample_initial(20000, generator=gen, dtype=torch.float64)
    assert s.std(0).numpy() == pytest.approx([0.5, 0.5], rel=0.05)


def test_every_builtin_is_documented():
    for name in plants.builtin_names():
        p = plants.load(name)
        assert len(p.state_names) == p.n_x and len(p.state_units) == p.n_x and len(p.input_names) == p.n_u
        assert p.dt > 0 and p.horizon > 0 and np.all(np.linalg.eigvalsh(p.R) > 0)
        if isinstance(p, plants.ODEPlant):
            doc = type(p).__doc__
            for key in p.params:
                assert key in doc.replace("μ", "mu").replace("Jb", "J"), f"{name}: parameter {key} not documented"


@pytest.mark.parametrize("name", ["cartpole", "quadrotor2d", "double_integrator"])
def test_gym_env_passes_gymnasium_checker(name):
    from gymnasium.utils.env_checker import check_env

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the checker warns about unbounded Boxes, which are intended
        check_env(plants.gym.make(name), skip_render_check=True)


def test_gym_eval_split_and_divergence():
    env = plants.gym.make("pendulum", split="eval", divergence=2.0)
    obs, _ = env.reset(seed=1)
    assert np.abs(obs).max() <= 0.5 + 1e-6
    env.reset(seed=1, options={"split": "train"})
    terminated = False
    for _ in range(100):
        obs, r, terminated, truncated, info = env.step(np.array([5.0], dtype=np.float32))
        if terminated:
            break
    assert terminated and np.abs(obs).max() > 0.6
    assert env.action_space.contains(np.array([4.9], dtype=np.float32))
    assert not env.action_space.contains(np.array([5.1], dtype=np.float32))
    with pytest.raises(ValueError, match="split must be 'train' or 'eval'"):
        plants.gym.make("pendulum", split="test")
