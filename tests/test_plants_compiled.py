"""plants.CompiledRollout: same rollouts and gradients as plants.rollout, whole-step tracing, eager fallback.

The fast tests trace with dynamo's `eager` / `aot_eager` backends (the same graph capture and autograd split
as inductor, without the C++ code generation that costs tens of seconds); the inductor run is `slow`.
"""

from __future__ import annotations

import warnings

import control
import numpy as np
import pytest
import torch
from torch import nn

import plants
from lipnet.exceptions import LipnetArgument
from lipnet.train.config import RunConfig
from lipnet.train.loop import train
from lipnet.train.objectives import RolloutObjective

BUILTINS = ["cartpole", "pendulum", "quadrotor2d", "dcmotor", "msd", "vanderpol", "ballbeam", "double_integrator"]


def _mlp(n_x: int, n_u: int, dtype=torch.float64, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(n_x, 16), nn.Tanh(), nn.Linear(16, n_u)).to(dtype)


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()  # each test's graphs count against the recompile limit of the shared step code
    yield
    torch._dynamo.reset()


def _user_function_plant():
    def f(x, u):  # a damped pendulum written by a user, as plants.load("file.py:fn") would return it
        return torch.stack([x[..., 1], -9.81 * torch.sin(x[..., 0]) - 0.1 * x[..., 1] + u[..., 0]], -1)

    return plants.FunctionPlant(f, n_x=2, n_u=1, dt=0.05, name="userpend", u_low=-2.0, u_high=2.0)


PLANT_MAKERS = {name: (lambda name=name: plants.load(name)) for name in BUILTINS}
PLANT_MAKERS["lti-statespace"] = lambda: plants.from_lti(
    control.ss([[0, 1], [-2, -0.3]], [[0], [1]], np.eye(2), np.zeros((2, 1))), dt=0.05)
PLANT_MAKERS["user-function"] = _user_function_plant


@pytest.mark.parametrize("name", PLANT_MAKERS)
def test_whole_step_traces_in_one_graph_and_matches_eager(name):
    p = PLANT_MAKERS[name]()
    policy = _mlp(p.n_x, p.n_u)
    x0 = p.sample_initial(6, "eval", generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ref = plants.rollout(p, policy, x0, horizon=7, terminal="lqr")
    cr = plants.CompiledRollout(p, policy, backend="eager")  # fullgraph=True: a graph break would fail here
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback to eager would pass silently otherwise
        out = cr(x0, horizon=7, terminal="lqr")
    assert cr.compiled and cr.fallback_reason is None
    torch.testing.assert_close(out.states, ref.states, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.actions, ref.actions, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.cost, ref.cost, rtol=1e-12, atol=1e-12)


def test_gradients_match_eager_through_the_autograd_split():
    p = plants.load("cartpole")
    p.u_high = np.array([0.2])  # the clip is active on part of the batch, so its gradient mask is exercised
    p.u_low = np.array([-0.2])
    policy = _mlp(4, 1)
    x0 = p.sample_initial(16, "eval", generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    x0.requires_grad_()

    def grads(roll_fn):
        policy.zero_grad(set_to_none=True)
        x0.grad = None
        roll = roll_fn()
        roll.cost.sum().backward()
        return roll, [q.grad.clone() for q in policy.parameters()] + [x0.grad.clone()]

    ref_roll, ref = grads(lambda: plants.rollout(p, policy, x0, horizon=30, terminal="lqr"))
    cr = plants.CompiledRollout(p, policy, backend="aot_eager")
    out_roll, out = grads(lambda: cr(x0, horizon=30, terminal="lqr"))
    assert cr.compiled
    assert (ref_roll.actions.abs() >= 0.2 - 1e-12).any() and (ref_roll.actions.abs() < 0.2).any()
    torch.testing.assert_close(out_roll.cost, ref_roll.cost, rtol=1e-12, atol=1e-12)
    for a, b in zip(out, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_parameter_updates_are_seen_without_recompiling():
    p = plants.load("pendulum")
    policy = _mlp(2, 1)
    x0 = p.sample_initial(4, dtype=torch.float64)
    cr = plants.CompiledRollout(p, policy, backend="eager")
    before = cr(x0, horizon=5).cost
    with torch.no_grad():
        for q in policy.parameters():
            q.mul_(1.5)
    after = cr(x0, horizon=5).cost
    torch.testing.assert_close(after, plants.rollout(p, policy, x0, horizon=5).cost, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(before, after)


def test_per_channel_limits_are_applied():
    q = plants.load("quadrotor2d")
    q.u_high = np.array([0.05, 0.3])
    policy = _mlp(6, 2)
    x0 = q.sample_initial(8, dtype=torch.float64)
    out = plants.CompiledRollout(q, policy, backend="eager")(x0, horizon=4)
    ref = plants.rollout(q, policy, x0, horizon=4)
    torch.testing.assert_close(out.actions, ref.actions, rtol=1e-12, atol=1e-12)
    assert float(out.actions[..., 0].max().detach()) <= 0.05 + 1e-15


def test_untraceable_policy_falls_back_to_eager_with_one_warning():
    p = plants.load("pendulum")
    inner = _mlp(2, 1)

    def policy(x):
        if float(x.detach().abs().sum()) > -1.0:  # a data-dependent Python branch: dynamo cannot keep one graph
            return inner(x)
        return -inner(x)

    x0 = p.sample_initial(4, dtype=torch.float64)
    cr = plants.CompiledRollout(p, policy, backend="eager")
    with pytest.warns(RuntimeWarning, match="torch.compile of the closed-loop step of pendulum failed .*eager"):
        out = cr(x0, horizon=6)
    assert not cr.compiled and cr.fallback_reason
    torch.testing.assert_close(out.cost, plants.rollout(p, inner, x0, horizon=6).cost)


def test_wrong_policy_output_is_a_clear_error_not_a_tracing_failure():
    p = plants.load("cartpole")
    cr = plants.CompiledRollout(p, _mlp(4, 2), backend="eager")
    with pytest.raises(ValueError, match=r"policy must map \[b, 4\] to \[b, 1\], got \(1, 2\)"):
        cr(p.sample_initial(3, dtype=torch.float64), horizon=3)
    assert cr.compiled  # nothing was traced, nothing fell back


def test_training_objective_uses_the_compiled_rollout(monkeypatch):
    calls = []
    real = torch.compile

    def eager_backend(fn, **kwargs):
        calls.append(kwargs)
        return real(fn, backend="eager", **kwargs)

    monkeypatch.setattr(torch, "compile", eager_backend)
    p = plants.load("double_integrator")
    lqr = plants.lqr(p)
    policy = _mlp(2, 1, dtype=torch.float32)
    x0 = p.sample_initial(8)
    compiled = RolloutObjective(p, lqr, horizon=10, compile=True)(policy, x0)
    eager = RolloutObjective(p, lqr, horizon=10)(policy, x0)
    assert calls and calls[0]["fullgraph"] is True
    torch.testing.assert_close(compiled, eager)


def test_compile_with_sphere_newton_is_refused_with_the_fix_before_any_folder_is_touched(tmp_path):
    cfg = RunConfig(plant="double_integrator")
    cfg.train.optimizer, cfg.train.compile, cfg.train.steps = "sphere-newton", True, 1
    with pytest.raises(LipnetArgument, match="sphere-newton .*cannot differentiate twice.*drop --compile"):
        train(cfg, tmp_path / "run", progress=False, log=lambda *a: None)
    assert not (tmp_path / "run").exists()
    old = tmp_path / "old"
    old.mkdir()
    (old / "controller.pt").write_bytes(b"a finished run")
    with pytest.raises(LipnetArgument):  # --overwrite with a bad configuration must not delete the old run
        train(cfg, old, overwrite=True, progress=False, log=lambda *a: None)
    assert (old / "controller.pt").read_bytes() == b"a finished run"


@pytest.mark.slow
def test_inductor_compiled_rollout_matches_eager_in_float32():
    p = plants.load("cartpole")
    policy = _mlp(4, 1, dtype=torch.float32)
    x0 = p.sample_initial(64)
    ref = plants.rollout(p, policy, x0, horizon=20, terminal="lqr")
    ref.cost.mean().backward()
    gref = [q.grad.clone() for q in policy.parameters()]
    policy.zero_grad(set_to_none=True)
    cr = plants.CompiledRollout(p, policy)
    out = cr(x0, horizon=20, terminal="lqr")
    out.cost.mean().backward()
    assert cr.compiled, cr.fallback_reason
    torch.testing.assert_close(out.cost, ref.cost, rtol=1e-4, atol=1e-4)
    for a, b in zip((q.grad for q in policy.parameters()), gref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)


@pytest.mark.slow
def test_train_with_compile_matches_the_eager_run(tmp_path):
    def run(compile_, name):
        cfg = RunConfig(plant="double_integrator")
        cfg.train.steps, cfg.train.warmup, cfg.train.batch, cfg.train.compile = 12, 4, 32, compile_
        cfg.train.eval_every = cfg.train.checkpoint_every = 6
        return train(cfg, tmp_path / name, progress=False, log=lambda *a: None)

    a, b = run(False, "eager"), run(True, "compiled")
    ra, rb = a.summary["evaluation"], b.summary["evaluation"]
    assert rb["cost_ratio_to_lqr_optimum"] == pytest.approx(ra["cost_ratio_to_lqr_optimum"], rel=1e-3)

