"""Issue 16: wrapped angles, task presets and initial-state regions, the MPC expert and the training it drives."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import plants
from lipnet.train.config import RunConfig
from lipnet.train.expert import MPCExpert, trajectory_optimum
from lipnet.train.loop import Evaluator, _choose_expert, train
from lipnet.train.objectives import RolloutObjective, stabilised
from plants.errors import PlantSpecError


@settings(max_examples=30, deadline=None)
@given(theta=st.floats(-10, 10), omega=st.floats(-5, 5), k=st.integers(-5, 5), u=st.floats(-3, 3))
def test_wrapped_pendulum_cost_is_periodic(theta, omega, k, u):
    p = plants.load("pendulum?task=swingup")
    x = torch.tensor([[theta, omega], [theta + 2 * math.pi * k, omega]], dtype=torch.float64)
    c = p.stage_cost(x, torch.full((2, 1), u, dtype=torch.float64))
    assert c[0].item() == pytest.approx(c[1].item(), rel=1e-9, abs=1e-9)
    dev = p.deviation(x)
    assert (dev[:, 0].abs() <= math.pi + 1e-12).all()


def test_the_saturated_lqr_also_sees_the_wrapped_angle():
    p = plants.load("pendulum?task=swingup")
    policy = plants.lqr(p).policy
    x = torch.tensor([[0.3, 0.1], [0.3 + 4 * math.pi, 0.1]], dtype=torch.float64)
    u = policy(x)
    assert u[0].item() == pytest.approx(u[1].item(), rel=1e-12)


def test_task_preset_and_region_options():
    p = plants.load("pendulum?task=swingup")
    assert p.u_high[0] == pytest.approx(0.4 * 9.81) and p.horizon == 200 and p.periodic == (0,)
    assert p.init_train.kind == "uniform" and np.allclose(p.init_train.scale, [math.pi, 1.0])
    assert np.allclose(p.init_eval.scale, p.init_train.scale)  # the task's region is what is evaluated
    assert plants.load(p.spec).spec == p.spec == "pendulum?task=swingup"
    assert plants.load("pendulum?task=swingup&u_max=2").u_high[0] == 2.0  # an explicit option wins
    box = plants.load("cartpole?x0_box=1,0.5,1.2,1")
    assert np.allclose(box.init_train.scale, [1, 0.5, 1.2, 1]) and box.periodic == (2,)
    narrow = plants.load("pendulum")
    assert narrow.u_high[0] == 5.0 and np.allclose(narrow.init_train.scale, [0.2, 0.3])


@pytest.mark.parametrize("spec,match", [("pendulum?task=fly", "unknown task 'fly'"),
                                        ("pendulum?x0_box=1,2,3", "x0_box"),
                                        ("pendulum?x0_box=-1,1", "x0_box"),
                                        ("pendulum?x0_box=nan,1", "x0_box"),
                                        ("pendulum?x0_box=1&x0_std=1", "not both")])
def test_bad_region_options_are_clear_errors(spec, match):
    with pytest.raises(PlantSpecError, match=match):
        plants.load(spec)


def test_periodic_must_name_states():
    f = {"f": lambda x, u: torch.cat([x[:, 1:], u], -1), "n_x": 2, "n_u": 1, "dt": 0.1}
    assert plants.FunctionPlant(f["f"], 2, 1, 0.1, periodic=[0]).periodic == (0,)
    with pytest.raises(PlantSpecError, match="periodic"):
        plants.FunctionPlant(f["f"], 2, 1, 0.1, periodic=[2])


def test_auto_expert_is_lqr_on_narrow_tasks_and_mpc_on_swing_up():
    cfg = RunConfig().train
    for spec, want in (("pendulum", "lqr"), ("pendulum?task=swingup", "mpc"), ("pendulum?task=swingup&horizon=4",
                                                                              "lqr")):
        p = plants.load(spec)
        assert _choose_expert(p, plants.lqr(p), cfg, 0, torch.float32)[0] == want


def test_mpc_expert_swings_the_pendulum_up_where_the_saturated_lqr_cannot():
    p = plants.load("pendulum?task=swingup")
    lqr = plants.lqr(p)
    x0 = torch.tensor([[math.pi - 0.05, 0.0], [-math.pi + 0.3, 0.5], [2.5, -1.0], [-2.0, 0.8]])
    demos = MPCExpert(p, generator=torch.Generator().manual_seed(0), guide=lqr.policy).demonstrations(x0, 200)
    assert demos.states.shape == (200, 4, 2) and demos.actions.shape == (200, 4, 1)
    assert (demos.actions.abs() <= p.u_high[0] + 1e-6).all()
    ev = Evaluator(p, lqr, x0, 200, "none")
    done = plants.Rollout(torch.stack([x0, demos.final]), demos.actions[:1], torch.zeros(4))
    assert stabilised(p, done).all(), demos.final  # every start ends upright and at rest
    assert ev.lqr_success.float().mean() < 0.5  # which the saturated LQR does not manage from these starts


def test_trajectory_optimum_beats_the_saturated_lqr_and_its_rollouts_are_real():
    """The benchmark's optimum reference: never worse than its start, strictly better where the saturated LQR
    loses (a quadrotor from a wide start), inside the actuator limits, and its cost is that of its own actions."""
    p = plants.load("quadrotor2d?task=wide&horizon=60")
    lqr = plants.lqr(p)
    x0 = p.sample_initial(6, "eval", generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with torch.no_grad():
        init = plants.rollout(p, lqr.policy, x0, horizon=p.horizon)
    best = trajectory_optimum(p, lqr, x0, [init], iterations=60)
    finite = torch.isfinite(init.cost)
    assert (best.cost[finite] <= init.cost[finite] * (1 + 1e-12)).all()
    assert best.cost[finite].sum() < 0.99 * init.cost[finite].sum()
    lo, hi = torch.as_tensor(p.u_low), torch.as_tensor(p.u_high)
    assert ((best.actions >= lo - 1e-12) & (best.actions <= hi + 1e-12)).all()
    acts = best.actions
    with torch.no_grad():
        replay = plants.rollout(p, lambda x, _t=iter(range(p.horizon)): acts[next(_t)], x0, horizon=p.horizon)
    torch.testing.assert_close(replay.cost, best.cost, rtol=1e-9, atol=1e-9)


def test_rollout_cost_over_stabilised_starts_ignores_the_lost_ones():
    """After the MPC expert, the rollout phase averages the cost over the starts the controller stabilises: a start
    it loses changes neither the loss nor its gradient."""
    p = plants.load("pendulum?task=swingup")
    lqr = plants.lqr(p)
    caught, lost = torch.tensor([[0.2, 0.0], [-0.3, 0.1]]), torch.tensor([[3.0, 0.0]])
    gain = torch.nn.Parameter(torch.ones(1))

    def policy(x):
        return lqr.policy(x) * gain

    obj = RolloutObjective(p, lqr, 200, "none", stabilised_only=True)
    both = obj(policy, torch.cat([caught, lost]))
    (g_both,) = torch.autograd.grad(both, gain)
    alone = obj(policy, caught)
    (g_alone,) = torch.autograd.grad(alone, gain)
    torch.testing.assert_close(both, alone)
    torch.testing.assert_close(g_both, g_alone)
    with torch.no_grad():
        assert not stabilised(p, plants.rollout(p, policy, lost, horizon=200)).any()  # the saturated LQR loses it
    plain = RolloutObjective(p, lqr, 200, "none")(policy, torch.cat([caught, lost]))
    assert plain > 1.2 * both  # without the option it counts


def test_stabilised_starts_are_fixed_for_one_batch_of_starts():
    """One optimiser step evaluates the loss on the same starts at several trial points: the starts averaged over
    are those of the first evaluation, so the loss does not jump where a trial point loses (or catches) a start;
    a new batch decides afresh."""
    p = plants.load("pendulum?task=swingup")
    lqr = plants.lqr(p)
    x0 = torch.tensor([[0.2, 0.0], [-0.3, 0.1]])
    weight = torch.ones(2, 1)  # per start (rows keep their order through the rollout)

    def policy(x):
        return lqr.policy(x) * weight

    obj = RolloutObjective(p, lqr, 200, "none", stabilised_only=True)
    first = obj(policy, x0)
    weight[1] = 0.0  # a trial point that loses the second start only
    with torch.no_grad():
        roll = plants.rollout(p, policy, x0, horizon=200)
        assert stabilised(p, roll).tolist() == [True, False]
        trial = obj(policy, x0)
    torch.testing.assert_close(trial, roll.cost.mean() / lqr.cost(x0).mean())  # still over both starts
    fresh = RolloutObjective(p, lqr, 200, "none", stabilised_only=True)(policy, x0)
    torch.testing.assert_close(fresh, roll.cost[:1].mean() / lqr.cost(x0[:1]).mean())  # decided at this point
    weight[1] = 1.0
    torch.testing.assert_close(obj(policy, x0.clone()), first)  # a new batch of the same states


def test_training_report_has_both_success_rates(tmp_path):
    cfg = RunConfig(plant="double_integrator")
    cfg.train.steps, cfg.train.batch, cfg.train.eval_batch, cfg.controller.hidden = 3, 8, 16, [4]
    res = train(cfg, tmp_path / "r", progress=False, log=lambda *a: None)
    ev = res.summary["evaluation"]
    assert {"success_rate", "lqr_policy_success_rate", "cost_ratio_to_lqr_policy",
            "cost_ratio_to_lqr_policy_both_stabilised", "region"} <= set(ev)
    assert res.summary["expert"] == "lqr" and res.summary["terminal"] == "lqr"


def _tiny_mpc_config() -> RunConfig:
    cfg = RunConfig(plant="pendulum?task=swingup&horizon=12")
    tc = cfg.train
    tc.expert, tc.demos, tc.demo_warmup, tc.steps, tc.batch, tc.eval_batch = "mpc", 4, 6, 10, 8, 16
    tc.eval_every, tc.checkpoint_every, tc.expert_labels = 2, 2, 16
    cfg.controller.hidden = [8]
    return cfg


def test_mpc_path_uses_relu_the_manifold_adam_warm_start_and_resumes_exactly(tmp_path, monkeypatch):
    import lipnet.train.loop as loop

    built = []
    real = loop.make_optimizer
    monkeypatch.setattr(loop, "make_optimizer", lambda name, model, **kw: built.append(
        (name, kw)) or real(name, model, **kw))
    whole = train(_tiny_mpc_config(), tmp_path / "whole", progress=False, log=lambda *a: None)
    # after the MPC expert sphere-mm follows the plain gradient (its scaled direction lost starts there)
    assert [kw.get("precondition") for n, kw in built if n == "sphere-mm"] == [False]
    s = whole.summary
    assert s["expert"] == "mpc" and s["activation"] == "relu" and s["warm_start_optimizer"] == "manifold-adam"
    # the bound admits an expert that switches between the actuator limits: 16 × the scaled LQR gain, not 4 ×
    assert s["lipschitz_source"].startswith("auto: 16 ×")
    lqr_path = _tiny_mpc_config()
    lqr_path.train.expert = "lqr"
    built.clear()
    assert train(lqr_path, tmp_path / "lqr", progress=False, log=lambda *a: None).summary[
        "lipschitz_source"].startswith("auto: 4 ×")
    # there the scaled direction (the default) both times; the rollout phase's optimiser averages its gradients,
    # the LQR imitation's does not
    assert [(kw.get("precondition", True), kw.get("momentum", 0.0)) for n, kw in built if n == "sphere-mm"] == [
        (True, loop.ROLLOUT_MOMENTUM), (True, 0.0)]
    assert s["terminal"] == "none" and s["training_horizon"] == 12 and s["moved_from_warm_start"] is not None
    assert s["imitation_pairs"] == 4 * 12 + 16  # the demonstrations' pairs and the expert's labels on spread states
    assert [r["objective"] for r in whole.metrics[:7]] == ["imitation"] * 6 + ["rollout"]
    assert not whole.controller.straight_through  # a training-only switch
    part = train(_tiny_mpc_config(), tmp_path / "part", progress=False, log=lambda *a: None, stop_after=4)
    assert part.metrics[-1]["step"] == 4
    rest = train(_tiny_mpc_config(), tmp_path / "part", resume=True, progress=False, log=lambda *a: None)
    for a, b in zip(whole.controller.state_dict().values(), rest.controller.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_rollout_phase_starts_from_the_best_validated_iterate_of_the_imitations_tail(tmp_path):
    cfg = _tiny_mpc_config()
    cfg.train.demo_warmup = 8  # its last quarter: steps 6 and 8 are validated
    train(cfg, tmp_path / "run", progress=False, log=lambda *a: None, stop_after=8)
    state = torch.load(tmp_path / "run" / "train_state.pt", weights_only=False)
    evals = {r["step"]: r["eval_cost_ratio"] for r in state["metrics"] if r["eval_cost_ratio"] != ""}
    # on this seed the step-6 iterate validates better than the last one (step 8): the hand-off goes back to it
    assert state["best"]["step"] == 6
    for k, v in state["warm_state"].items():
        assert torch.equal(v, state["best"]["state"][k]), k
    assert evals[8] == evals[6]  # what the rollout phase starts from is the step-6 controller


@pytest.mark.parametrize("optimizer, rollout_surrogate", [("sphere-mm", False), ("manifold-adam", True)])
def test_a_checking_optimiser_gets_the_clips_own_gradient(tmp_path, monkeypatch, optimizer, rollout_surrogate):
    import lipnet.train.loop as loop

    seen, real = set(), loop._optimizer_step

    def spy(opt, objective, controller, x0):
        seen.add((objective.name, controller.straight_through))
        return real(opt, objective, controller, x0)

    monkeypatch.setattr(loop, "_optimizer_step", spy)
    cfg = _tiny_mpc_config()
    cfg.train.optimizer = optimizer
    train(cfg, tmp_path / "run", progress=False, log=lambda *a: None)
    # the imitation (manifold-adam) follows the surrogate; sphere-mm's majoriser is checked against the loss it
    # evaluates, so its slope must be that loss's: the hard clip's own gradient
    assert seen == {("imitation", True), ("rollout", rollout_surrogate)}


def test_a_diverging_rollout_phase_ends_and_returns_its_best_validated_controller(tmp_path, monkeypatch):
    import lipnet.train.loop as loop

    real = loop._optimizer_step

    def nan_in_rollout(opt, objective, controller, x0):  # every rollout step is undone (non-finite loss)
        loss = real(opt, objective, controller, x0)
        return loss * float("nan") if objective.name == "rollout" else loss

    monkeypatch.setattr(loop, "_optimizer_step", nan_in_rollout)
    cfg = _tiny_mpc_config()
    cfg.train.steps = 40  # room for the 10 undone steps in a row that end the phase
    with pytest.warns(UserWarning, match="best validated controller"):
        res = train(cfg, tmp_path / "run", progress=False, log=lambda *a: None)
    s = res.summary
    assert s["stopped"].startswith(loop.DIVERGED) and "undone" in s["stopped"]
    assert res.metrics[-1]["step"] == 6 + loop.MAX_SKIPPED_IN_A_ROW  # the phase ended there, not at step 40
    best = torch.load(tmp_path / "run" / "train_state.pt", weights_only=False)["best"]
    assert s["restored_best_step"] == best["step"] <= 6
    saved = torch.load(tmp_path / "run" / "controller.pt", weights_only=True)["state_dict"]
    for k, v in best["state"].items():
        assert torch.equal(res.controller.state_dict()[k], v) and torch.equal(saved[k], v), k


def test_rollout_phase_keeps_no_controller_worse_where_the_saturated_lqr_works():
    import lipnet.train.loop as loop
    from lipnet.nn import Controller

    c = Controller(1, 1, hidden=(4,))
    best = {"score": None, "state": None, "step": 0}
    hand_off = {"success_rate": 1.0, "cost": 5.0, "cost_where_lqr_stabilises": 2.0,
                "lqr_policy_cost_where_it_stabilises": 1.0}
    loop._keep_best(best, hand_off, c, 10)
    limit = loop._region_limit(best, hand_off)
    assert limit == pytest.approx((1 + loop.LQR_REGION_SLACK) * 2.0)  # the imitated controller's, it costs more
    cheaper_far_dearer_near = {"success_rate": 1.0, "cost": 4.0, "cost_where_lqr_stabilises": 2.5}
    loop._keep_best(best, cheaper_far_dearer_near, c, 20, limit)
    assert best["step"] == 10  # lower mean cost, but it trades the starts the LQR handles: not kept
    assert best["refused"] == 1  # ... and counted, for the report
    dearer_everywhere = {"success_rate": 1.0, "cost": 6.0, "cost_where_lqr_stabilises": 2.5}
    loop._keep_best(best, dearer_everywhere, c, 25, limit)
    assert best["step"] == 10 and best["refused"] == 1  # no better score: nothing was refused
    cheaper = {"success_rate": 1.0, "cost": 4.5, "cost_where_lqr_stabilises": 2.1}
    loop._keep_best(best, cheaper, c, 30, limit)
    assert best["step"] == 30 and best["region_cost"] == 2.1 and best["refused"] == 1
    # the saturated LQR's own cost sets the allowance where it is the higher one; none without such starts
    assert loop._region_limit({"region_cost": 0.5}, {"lqr_policy_cost_where_it_stabilises": 1.0}) == \
        pytest.approx(1 + loop.LQR_REGION_SLACK)
    assert loop._region_limit({"region_cost": None}, {"lqr_policy_cost_where_it_stabilises": None}) is None
    assert loop._region_limit({"region_cost": math.inf}, {"lqr_policy_cost_where_it_stabilises": 1.0}) is None
    assert loop._region_limit({"region_cost": math.nan}, {"lqr_policy_cost_where_it_stabilises": 1.0}) is None


def test_evaluator_reports_the_cost_where_the_saturated_lqr_stabilises():
    import lipnet.train.loop as loop

    plant = plants.load("pendulum?task=swingup&horizon=40")
    lqr = plants.lqr(plant)
    x0 = plant.sample_initial(64, "eval", generator=torch.Generator().manual_seed(0))
    ev = loop.Evaluator(plant, lqr, x0, plant.horizon, "none")
    caught = ev.lqr_success
    assert 0 < int(caught.sum()) < 64  # the swing-up: the saturated LQR catches some starts, not all
    out = ev(lqr.policy)  # the saturated LQR against itself
    assert out["cost_where_lqr_stabilises"] == pytest.approx(out["lqr_policy_cost_where_it_stabilises"])
    assert out["lqr_policy_cost_where_it_stabilises"] == pytest.approx(float(ev.lqr_policy_cost[caught].mean()))


def test_straight_through_clip_keeps_the_value_and_passes_the_gradient():
    from lipnet.nn import Controller

    c = Controller(1, 1, hidden=(4,), u_low=-1.0, u_high=1.0, saturation="clip", action_scale=10.0)
    with torch.no_grad():
        c.layers[-1].bias.fill_(5.0)  # the action is saturated at +1
    x = torch.tensor([[3.0]], requires_grad=True)
    hard = c(x)
    c.straight_through = True
    soft = c(x)
    assert torch.equal(hard, soft) and float(hard.detach()) == 1.0
    (g_soft,) = torch.autograd.grad(soft.sum(), x)
    c.straight_through = False
    (g_hard,) = torch.autograd.grad(c(x).sum(), x)
    assert float(g_hard) == 0.0 and float(g_soft) != 0.0  # the hard clip's gradient vanishes, the surrogate's not


def test_config_toml_records_the_resolved_choices_and_reproduces_the_run(tmp_path):
    from lipnet.train.config import load_config

    first = train(_tiny_mpc_config(), tmp_path / "a", progress=False, log=lambda *a: None)
    cfg = load_config(tmp_path / "a" / "config.toml")
    assert (cfg.controller.activation, cfg.train.expert, cfg.train.steps, cfg.train.terminal) == \
        ("relu", "mpc", 10, "none")
    again = train(cfg, tmp_path / "b", progress=False, log=lambda *a: None)
    for a, b in zip(first.controller.state_dict().values(), again.controller.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_dagger_relabels_visited_states_and_resumes_exactly(tmp_path):
    import plants
    from lipnet.train.expert import MPCExpert

    plant = plants.load("pendulum?task=swingup")
    lqr = plants.lqr(plant)
    expert = MPCExpert(plant, generator=torch.Generator().manual_seed(0), guide=lqr.policy)
    near = torch.tensor([[0.05, 0.0], [-0.03, 0.1]])
    # near upright the guide's (saturated LQR) sequence is the cheapest: the label is its action
    assert torch.allclose(expert.label(near), plant.clip(lqr.policy(near)), atol=1e-5)
    cfg = _tiny_mpc_config()
    cfg.train.dagger = 1
    whole = train(cfg, tmp_path / "whole", progress=False, log=lambda *a: None)
    state = torch.load(tmp_path / "whole" / "train_state.pt", weights_only=True)
    (xs, us), = state["dagger"]
    assert xs.shape[0] == 4 * 3 and us.shape == (12, 1)  # 4 starts × every 4th of 12 steps, labelled
    part = train(cfg, tmp_path / "part", progress=False, log=lambda *a: None, stop_after=4)
    assert part.metrics[-1]["step"] == 4
    rest = train(cfg, tmp_path / "part", resume=True, progress=False, log=lambda *a: None)
    for a, b in zip(whole.controller.state_dict().values(), rest.controller.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_report_says_the_imitation_was_kept_and_why():
    from lipnet.train.report import warnings_of

    base = {"evaluation": {"cost": 1.0, "cost_ratio_to_lqr_optimum": 1.0}, "warm_start_steps": 1500,
            "steps_total": 1600, "moved_from_warm_start": 0.0, "last_eval_improvement": None}
    # the validated best came from the imitation's tail, before the hand-off: the rollout phase gave nothing
    said = warnings_of({**base, "restored_best_step": 1150, "refused_by_lqr_region_guard": 3})
    assert any("imitated the expert was kept" in w and "3 of its controllers" in w for w in said)
    said = warnings_of({**base, "restored_best_step": 1500, "refused_by_lqr_region_guard": 0})
    assert any("imitated the expert was kept" in w and "of its controllers" not in w for w in said)
    # a rollout-phase controller was kept: no such warning; nor where there was no rollout phase at all
    assert not any("was kept" in w for w in warnings_of({**base, "restored_best_step": 1575,
                                                         "moved_from_warm_start": 0.05}))
    assert not any("was kept" in w for w in warnings_of({**base, "steps_total": 1500, "restored_best_step": 1150}))
