"""Certified regions of attraction: interval enclosures, the region search, its soundness by simulation, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import plants
from lipnet.certify import intervals as iv
from lipnet.certify import roa
from lipnet.certify.network import MLP
from lipnet.certify.roa import (
    NoEquilibrium,
    certify_region,
    linear_policy,
    lqr_policy,
    mlp_policy,
    region_certificates,
    verify_region,
)


# --- interval enclosures ---------------------------------------------------------------------------------------
def _f(x):
    a, b = x.unbind(-1)
    s = torch.sin(a) * b + torch.cos(b) ** 2 - torch.tanh(a - b) / (2.0 + torch.exp(0.3 * a))
    t = torch.clamp(torch.add(a, b, alpha=-0.5), -0.4, 0.3) + torch.atan(a * b) + torch.sqrt(4.0 + a)
    return torch.stack((s, t), -1) @ torch.tensor([[1.0, -0.5], [0.25, 2.0]], dtype=torch.float64)


@settings(max_examples=30, deadline=None)
@given(st.floats(-2, 2), st.floats(-2, 2), st.floats(1e-3, 1.0), st.floats(1e-3, 1.0), st.integers(0, 2**31 - 1))
def test_enclosures_contain_every_sampled_value_and_jacobian(cx, cy, rx, ry, seed):
    lo, hi = np.array([[cx - rx, cy - ry]]), np.array([[cx + rx, cy + ry]])
    out = _f(iv.variable(lo, hi))
    gen = torch.Generator().manual_seed(seed)
    x = torch.as_tensor(lo) + torch.as_tensor(hi - lo) * torch.rand(256, 2, generator=gen, dtype=torch.float64)
    y = _f(x).numpy()
    jac = torch.func.vmap(torch.func.jacrev(lambda v: _f(v[None])[0]))(x).numpy()
    assert (y >= out.lo - 1e-12).all() and (y <= out.hi + 1e-12).all()
    assert (jac >= out.jlo - 1e-12).all() and (jac <= out.jhi + 1e-12).all()
    assert np.all(out.hi - out.lo < 50 * max(rx, ry) + 1e-9)  # tight enough to be useful, not [-inf, inf]


def test_degenerate_box_encloses_the_point_value_to_rounding():
    x = np.array([[0.3, -0.7]])
    out = _f(iv.variable(x, x))
    y = _f(torch.as_tensor(x)).numpy()
    assert (out.lo <= y).all() and (y <= out.hi).all() and np.all(out.hi - out.lo < 1e-13)


def test_unsupported_op_names_the_op_and_the_callers_line():
    def step(x):
        return torch.erf(x)  # the line the message must name

    with pytest.raises(iv.Uncertifiable, match=r"cannot certify: op torch\.erf at .*test_roa\.py:\d+"):
        step(iv.variable(np.zeros((1, 2)), np.ones((1, 2))))
    with pytest.raises(iv.Uncertifiable, match="branch on a state-dependent value"):
        bool(iv.variable(np.zeros((1, 1)), np.ones((1, 1)))[..., 0] > 0) if False else \
            (iv.variable(np.zeros((1, 1)), np.ones((1, 1))).__bool__())
    with pytest.raises(iv.Uncertifiable, match="contains 0"):
        1.0 / iv.variable(-np.ones((1, 1)), np.ones((1, 1)))


# --- soundness of certified regions by simulation -------------------------------------------------------------
def _inside(P, x_eq, rho, n, rng):
    """n states in `{V ≤ ρ}`: half on its boundary (the hardest), half uniform inside."""
    d = P.shape[0]
    u = rng.standard_normal((n, d))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    rad = np.where(np.arange(n) % 2 == 0, 1.0, rng.random(n) ** (1 / d))
    R = np.linalg.cholesky(P).T
    return x_eq + math.sqrt(rho) * (u * rad[:, None]) @ np.linalg.inv(R).T


def _all_converge(plant, policy, region, scale=1.0, n=10_000, steps=None, seed=0) -> bool:
    """What the certificate promises, checked on n simulated starts in `{V ≤ scale·ρ}`: V decreases at every step
    taken outside the proven local region `{V ≤ ρ_local}` (so the set is invariant), and every start ends inside
    that local region or within a thousandth of the level."""
    P, x_eq = np.asarray(region["P"]), np.asarray(region["x_eq"])
    rho0 = region.get("rho_local", 0.0)
    x = torch.as_tensor(_inside(P, x_eq, region["rho"] * scale, n, np.random.default_rng(seed)))

    def V(t):
        e = t.numpy() - x_eq
        return np.einsum("bi,ij,bj->b", e, P, e)

    v = V(x)
    target = max(rho0, 1e-3 * region["rho"] * scale)
    budget = steps or 20 * plant.horizon
    with torch.no_grad():
        # A start near a slow passage (a ghost equilibrium of the perturbed loop) may take many more steps; those
        # few keep going (up to 50× the budget) as long as V keeps decreasing.
        for k in range(50 * budget):
            if k >= budget and np.all(v <= target):
                break
            keep = v > target if k >= budget else slice(None)
            x, v = x[keep], v[keep]
            x = plant.step(x, policy.torch(x))
            v_next = V(x)
            if not np.all(np.isfinite(v_next)) or np.any((v > rho0) & (v_next >= v)):
                return False
            v = v_next
    # Near x_eq the contraction can be slow (a slow-rate V): "converged" is V down to a thousandth of the level.
    return bool(np.all(v <= target))


def _anchored_mlp(K, u_eq, lim, seed, eps):
    """relu MLP computing `clip(u_eq − K e + eps·(g(e) − g(0)))`: a random perturbation of a linear gain.

    The linear part passes through relu(e + 10) − 10 (kinks far outside the box); g is a random relu layer.
    """
    rng = np.random.default_rng(seed)
    m, n = K.shape
    h = 6
    w1 = np.concatenate([np.eye(n), rng.standard_normal((h, n))])
    b1 = np.concatenate([np.full(n, 10.0), 0.3 * rng.standard_normal(h)])
    w2 = np.concatenate([-K, eps * rng.standard_normal((m, h))], axis=1)
    b2 = u_eq + K @ np.full(n, 10.0) - w2[:, n:] @ np.maximum(b1[n:], 0.0)
    return MLP([w1, w2], [b1, b2], activation="relu", u_low=-lim * np.ones(m), u_high=lim * np.ones(m),
               saturation="clip")


@settings(max_examples=6, deadline=None)
@given(st.floats(0.5, 3.0), st.floats(0.0, 0.5), st.floats(0.4, 2.0), st.floats(1.0, 4.0), st.integers(0, 10**6))
def test_random_nonlinear_loops_every_start_in_the_certified_region_converges(a, damp, gain, lim, seed):
    def f(x, u):
        th, om = x.unbind(-1)
        return torch.stack((om, a * torch.sin(th) - damp * om + gain * torch.cos(th) * u[..., 0]), -1)

    plant = plants.FunctionPlant(f, n_x=2, n_u=1, dt=0.05, substeps=2, u_low=[-lim], u_high=[lim],
                                 x0_box=[1.5, 3.0], horizon=100)
    K = np.asarray(plants.lqr(plant).K)
    net = _anchored_mlp(K, plant.u_eq, lim, seed, eps=0.3)
    policy = mlp_policy(net)
    region = certify_region(plant, policy, box=[1.5, 3.0], seconds=20)
    from lipnet.certify.roa import linearisation

    if max(abs(np.linalg.eigvals(linearisation(plant, policy)))) >= 1:  # the perturbation destabilised the loop
        assert not region["certified"] and "not stable" in region["reason"]
        return
    assert region["certified"] and region["rho"] > 0
    assert _all_converge(plant, policy, region)


def test_an_inflated_level_is_caught_by_the_simulation_check():
    # x⁺ = x + dt (x³ − x) + dt u with u = 0: the region of attraction of 0 is exactly |x| < 1.
    plant = plants.FunctionPlant(lambda x, u: x**3 - x + 0 * u, n_x=1, n_u=1, dt=0.1, x0_box=[1.5], horizon=200)
    policy = linear_policy(np.zeros((1, 1)), [0.0], [0.0])
    region = certify_region(plant, policy, box=[1.5], seconds=20)
    assert region["certified"]
    edge = math.sqrt(region["rho"] / region["P"][0][0])
    assert 0.9 < edge < 1.0  # tight, and never past the true boundary
    assert _all_converge(plant, policy, region)
    assert not _all_converge(plant, policy, region, scale=(1.05 / edge) ** 2)  # the check can fail


def test_a_barely_contracting_loop_keeps_a_local_region_that_fits_its_ultimate_bound():
    # x⁺ = x + dt(−k e + e²), e = x − 100: a contraction margin of 1e-6 per step, and x_eq = 100 leaves a rounding
    # residual at the equilibrium. The local step's level must hold its ultimate bound δ/(1 − γ) too; a bisection
    # that only asked γ < 1 stopped where γ → 1, the bound blew up past the level and no region was left.
    x_eq = 100.0
    plant = plants.FunctionPlant(lambda x, u: -1e-5 * (x - x_eq) + (x - x_eq) ** 2 + 0 * u, n_x=1, n_u=1, dt=0.1,
                                 x0_box=[1e-3], horizon=200, x_eq=[x_eq], u_eq=[0.0])
    region = certify_region(plant, linear_policy(np.zeros((1, 1)), [x_eq], [0.0]), box=[1e-3], seconds=10)
    assert region["certified"] and region["rho"] >= region["rho_local"] > 0
    assert 4 * region["ultimate_bound"] ** 2 <= region["rho_local"]


def test_pendulum_lqr_region_holds_and_twice_the_level_does_not():
    plant = plants.load("pendulum")
    policy = lqr_policy(plant)
    region = certify_region(plant, policy, box=[3.0, 6.0], seconds=30)
    assert region["certified"] and region["ultimate_bound"] < 1e-9
    assert _all_converge(plant, policy, region)
    assert not _all_converge(plant, policy, region, scale=2.0)


def test_verify_region_re_proves_a_stated_level_and_refuses_an_inflated_one():
    plant = plants.load("pendulum")
    policy = lqr_policy(plant)
    region = certify_region(plant, policy, box=[3.0, 6.0], seconds=30)
    again = verify_region(plant, policy, region)
    assert again["certified"] and again["rho"] == region["rho"]
    forged = verify_region(plant, policy, region | {"rho": 2 * region["rho"]})
    assert not forged["certified"] and "could not be re-proven" in forged["reason"]


def test_an_offered_region_is_verified_up_to_its_level_and_an_inflated_one_is_not_claimed():
    plant = plants.load("pendulum")
    policy = lqr_policy(plant)
    region = certify_region(plant, policy, box=[3.0, 6.0], seconds=30)
    offered = {"P": region["P"], "rho": region["rho"]}
    again = certify_region(plant, policy, box=[3.0, 6.0], seconds=30, also_try=[offered])
    assert again["certified"] and again["volume_share"] >= region["volume_share"] * (1 - 1e-9)
    # damaged candidates (a stored region from another plant, an indefinite or NaN matrix) are passed over
    damaged = [{"P": np.eye(3).tolist(), "rho": 1.0}, {"P": [[1.0, 2.0], [2.0, 1.0]], "rho": 1.0},
               {"P": [[float("nan"), 0.0], [0.0, 1.0]], "rho": 1.0}]
    also = certify_region(plant, policy, box=[3.0, 6.0], seconds=30, also_try=damaged + [offered])
    assert also["certified"] and also["volume_share"] >= region["volume_share"] * (1 - 1e-9)
    # an offered level beyond what holds (twice the proven one fails in simulation, test above) is cut back
    P = np.asarray(region["P"])
    inflated = certify_region(plant, policy, box=[3.0, 6.0], seconds=10, P=P, rho_target=2 * region["rho"])
    assert inflated["rho"] < 2 * region["rho"] * (1 - 1e-6) and _all_converge(plant, policy, inflated)


def test_a_search_cut_short_by_the_box_cap_resumes_from_its_open_boxes():
    plant = plants.load("vanderpol")
    pol = roa.lqr_policy(plant)
    a = roa.linearisation(plant, pol)
    radius = float(np.max(np.abs(np.linalg.eigvals(a))))
    P = roa.shaped_lyapunov(a, roa.region_box(plant), radius + (1 - radius) * 0.9)
    full = roa.certify_region(plant, pol, P=P, max_boxes=None, seconds=60, batch=256)
    cont: list = []
    part = roa.certify_region(plant, pol, P=P, max_boxes=1000, seconds=60, batch=256, resume=cont)
    assert part["stopped"] == "budget reached (1000 boxes)" and part["rho"] < full["rho"]
    done = cont[0](60, None)
    assert done["rho"] == full["rho"] and done["subboxes"] == full["subboxes"]  # no box evaluated twice
    assert done["stopped"] == full["stopped"]


def test_the_controller_tries_the_lqr_own_region_before_an_offered_target(monkeypatch):
    """The saturated LQR's region proven in a shape of its own is the one to match: the controller's search takes it
    before a `train --roa` target, which may be far harder (PVTOL: the target's search took the whole budget), and
    the LQR's proof in the target's shape after it."""
    import lipnet.certify.roa as roa

    plant = plants.load("pendulum")
    K = np.asarray(plants.lqr(plant).K)
    target = {"P": roa.shaped_lyapunov(roa.linearisation(plant, lqr_policy(plant)), roa.region_box(plant, None),
                                       0.99).tolist(), "rho": 1.0}
    seen, lqr_proven = {}, []
    real_search, real_lqr = roa.certify_region, roa.lqr_region

    def spy(plant_, policy, **kw):
        seen.setdefault(policy.name, kw.get("also_try"))  # its own inner attempts offer nothing
        return real_search(plant_, policy, **kw)

    def lqr_spy(*a, proven=None, **kw):
        out = real_lqr(*a, proven=proven, **kw)
        lqr_proven.extend(proven)
        return out

    monkeypatch.setattr(roa, "certify_region", spy)
    monkeypatch.setattr(roa, "lqr_region", lqr_spy)
    net = _anchored_mlp(K, plant.u_eq, 5.0, 0, eps=0.05)
    region_certificates(net, plant, seconds=20, offer=[target])  # closes in ~4 s
    own = [r for r in lqr_proven if not r["offered"]]
    assert own, "the LQR proves a region in its own shape"
    tried = next(v for k, v in seen.items() if k != lqr_policy(plant).name)
    top = max(own, key=lambda r: r["volume_share"])
    assert tried[0] == {"P": top["P"], "rho": top["rho"]} and tried[1] == target
    assert len(tried) == 2 + any(r["offered"] for r in lqr_proven)


def test_an_offered_region_listed_twice_is_searched_once(monkeypatch):
    plant = plants.load("vanderpol")
    pol = lqr_policy(plant)
    a = roa.linearisation(plant, pol)
    P = roa.shaped_lyapunov(a, roa.region_box(plant), 0.999)
    searched = []
    real = roa.certify_region

    def spy(plant_, policy, **kw):
        if kw.get("P") is not None and np.allclose(kw["P"], P):
            searched.append(kw.get("rho_target"))
        return real(plant_, policy, **kw)

    monkeypatch.setattr(roa, "certify_region", spy)
    # a cap that cuts the first search short: its copy would otherwise be searched again from scratch
    out = real(plant, pol, seconds=20, max_boxes=300, also_try=[{"P": P, "rho": 1.0}, {"P": P.copy(), "rho": 1.0}])
    assert len(searched) == 1 and out["certified"]


def test_no_equilibrium_is_reported_with_the_residual():
    plant = plants.load("pendulum")
    policy = linear_policy(np.asarray(plants.lqr(plant).K), plant.x_eq, plant.u_eq + 0.5)
    with pytest.raises(NoEquilibrium, match="moves x_eq by"):
        certify_region(plant, policy)


def test_an_unsupported_plant_op_gives_a_labelled_estimate_never_certified():
    def f(x, u):
        th, om = x.unbind(-1)
        return torch.stack((om, -torch.erf(th) - om + u[..., 0]), -1)

    plant = plants.FunctionPlant(f, n_x=2, n_u=1, dt=0.05, x0_box=[1.0, 1.0], horizon=100)
    net = _anchored_mlp(np.asarray(plants.lqr(plant).K), plant.u_eq, 5.0, 0, eps=0.1)
    out = region_certificates(net, plant, seconds=5)
    for key in ("region", "region_lqr"):
        assert out[key]["certified"] is False and out[key]["estimate"] is True
        assert "torch.erf" in out[key]["reason"] and "test_roa.py" in out[key]["reason"]


def test_unstable_linearisation_is_not_certified():
    plant = plants.load("pendulum")
    policy = linear_policy(np.zeros((1, 2)), plant.x_eq, plant.u_eq)  # no feedback: upright is unstable
    region = certify_region(plant, policy)
    assert region["certified"] is False and "not stable" in region["reason"]


# --- through the CLI: certify writes the regions and the picture, export re-proves and embeds, a forged ρ fails ---
def test_cli_certify_region_export_embeds_it_and_refuses_a_forged_level(tmp_path, capsys):
    import json

    from export import read_metadata
    from lipnet.cli import main

    run = tmp_path / "run"
    assert main(["train", "--plant", "pendulum", "--steps", "20", "--hidden", "16,16", "--batch", "32",
                 "--no-progress", "--out", str(run)]) == 0
    assert main(["certify", str(run), "--roa-box", "1.5,4", "--roa-seconds", "30"]) == 0
    out = capsys.readouterr().out
    assert "region of attraction, lipnet: certified" in out and "saturated LQR: certified" in out
    cert = json.loads((run / "certificate.json").read_text())
    region = cert["closed_loop"]["region"]
    assert region["certified"] and region["kind"] == "sublevel" and region["rho"] > 0
    assert {"P", "x_eq", "rho", "box", "method", "subboxes", "seconds"} <= set(region)
    assert cert["closed_loop"]["region_lqr"]["certified"]
    assert (run / "roa.png").stat().st_size > 10_000
    assert main(["export", str(run), "--out", str(tmp_path / "c.onnx"), "--samples", "200"]) == 0
    embedded = read_metadata(tmp_path / "c.onnx")["lipnet.certificate"]["closed_loop"]["region"]
    assert embedded["certified"] and embedded["rho"] == region["rho"] and embedded["P"] == region["P"]
    cert["closed_loop"]["region"]["rho"] = region["rho"] * 50  # forged: far beyond what holds
    (run / "certificate.json").write_text(json.dumps(cert))
    capsys.readouterr()
    assert main(["export", str(run), "--out", str(tmp_path / "d.onnx"), "--samples", "200"]) != 0
    assert "re-proving it fails" in capsys.readouterr().err
    assert not (tmp_path / "d.onnx").exists()


def test_cli_roa_box_bad_input_is_one_line(tmp_path, capsys):
    from lipnet.cli import main

    assert main(["certify", str(tmp_path), "--roa-box", "1,-2"]) == 2
    assert "--roa-box" in capsys.readouterr().err


def test_train_roa_stage_guards_on_starts_of_its_own_not_the_evaluation_ones(tmp_path, monkeypatch):
    """The --roa stage's guard (no lost start, bounded cost) decides on its own starts: the held-out evaluation
    starts the report states are never used to choose the returned controller."""
    import lipnet.train.loop as loop
    from lipnet.train.config import RunConfig

    sizes = []

    class Spy(loop.Evaluator):
        def __call__(self, controller):
            sizes.append(self.x0.shape[0])
            return super().__call__(controller)

    monkeypatch.setattr(loop, "Evaluator", Spy)
    cfg = RunConfig(plant="pendulum")
    cfg.train.steps, cfg.train.roa_steps, cfg.train.batch, cfg.train.eval_batch = 4, 4, 16, 16
    cfg.train.eval_every, cfg.controller.hidden = 2, [8]
    res = loop.train(cfg, tmp_path / "r", progress=False, log=lambda *a: None)
    assert res.summary["expert"] == "lqr"  # no validator on this path: the guard brings its own starts
    guard_size = max(64, loop.VALIDATION_FACTOR * 16)
    assert guard_size in sizes and set(sizes) == {16, guard_size}


def test_train_roa_stage_runs_last_records_itself_and_resumes(tmp_path):
    import json

    from lipnet.cli import main
    from lipnet.train.config import RunConfig
    from lipnet.train.loop import train

    run = tmp_path / "run"
    assert main(["train", "--plant", "pendulum", "--steps", "4", "--roa-steps", "4", "--hidden", "8,8", "--batch",
                 "16", "--no-progress", "--out", str(run), "--json"]) == 0
    rows = (run / "metrics.csv").read_text().splitlines()[1:]
    assert [r.split(",")[1] for r in rows][-4:] == ["lyapunov"] * 4 and len(rows) == 8
    summary = json.loads((run / "summary.json").read_text())
    stage = summary["roa_stage"]
    assert stage["steps"] == 4 and 0 <= stage["violating_share_after"] <= 1 and len(stage["P"]) == 2
    assert stage["violating_share_after"] <= stage["violating_share_before"]  # the stage keeps its best
    assert stage["lqr_region"]["certified"] and stage["lqr_region"]["volume_share"] > 0  # the target it grew
    import plants
    from lipnet.certify.roa import default_seconds, region_certificates
    from lipnet.train.checkpoint import load_controller
    plant = plants.load("pendulum")
    reported = region_certificates(load_controller(run), plant, seconds=default_seconds(2))["region_lqr"]
    assert reported["rho"] == stage["lqr_region"]["rho"]  # `certify`'s LQR region by default: one region, no twin
    assert "roa_steps = 4" in (run / "config.toml").read_text()
    # the stage's target travels with the controller, and `certify` tries it first for both laws
    from lipnet.commands.certify import _roa_target
    from lipnet.train.checkpoint import load_trained

    offer = _roa_target(load_trained(run).meta)
    assert offer == [{"P": stage["P"], "rho": 1.0}]
    assert _roa_target({}) is None and _roa_target({"roa_target": "damaged"}) is None
    # stopped inside the stage and resumed: the same controller as the uninterrupted run
    cfg = RunConfig(plant="pendulum")
    cfg.controller.hidden, cfg.train.steps, cfg.train.roa_steps, cfg.train.batch = [8, 8], 4, 4, 16
    lines: list[str] = []
    full = train(cfg, tmp_path / "a", progress=False, log=lambda *a: lines.append(" ".join(map(str, a))))
    said = [line for line in lines if line.startswith("--roa:") and "target" in line]  # what the stage aims for
    # the LQR's region covers 0.75 of the pendulum's box: twice that cannot fit, and the log says so
    assert len(said) == 1 and "no contracted shape" in said[0] and "of the box, rate" in said[0]
    train(cfg, tmp_path / "b", progress=False, log=lambda *a: None, stop_after=6)
    resumed = train(cfg, tmp_path / "b", resume=True, progress=False, log=lambda *a: None)
    for k, v in full.controller.state_dict().items():
        assert torch.equal(v, resumed.controller.state_dict()[k]), k


def test_a_diverging_roa_stage_ends_and_returns_the_controller_it_started_from(tmp_path, monkeypatch):
    import lipnet.train.loop as loop
    from lipnet.train.config import RunConfig

    real = loop._optimizer_step
    monkeypatch.setattr(loop, "_optimizer_step", lambda opt, objective, controller, x0: (
        real(opt, objective, controller, x0) * (float("nan") if objective.name == "lyapunov" else 1.0)))
    cfg = RunConfig(plant="pendulum")
    cfg.controller.hidden, cfg.train.steps, cfg.train.roa_steps, cfg.train.batch = [8], 4, 30, 16
    with pytest.warns(UserWarning, match="best validated controller"):
        res = loop.train(cfg, tmp_path / "r", progress=False, log=lambda *a: None)
    stage = res.summary["roa_stage"]
    assert "undone" in stage["ended_early"] and res.metrics[-1]["step"] == 4 + loop.MAX_SKIPPED_IN_A_ROW
    assert res.summary["restored_best_step"] == 4  # the stage's start: no step of it was kept
    assert stage["violating_share_after"] == stage["violating_share_before"]


def test_train_roa_box_of_the_wrong_length_is_refused_before_the_folder(tmp_path, capsys):
    from lipnet.cli import main

    run = tmp_path / "run"
    assert main(["train", "--plant", "pendulum", "--roa", "--roa-box", "1,2,3", "--out", str(run)]) == 2
    assert "--roa-box" in capsys.readouterr().err and not run.exists()


def test_roa_objective_samples_lie_in_the_target_ellipsoid():
    from lipnet.train.lyapunov import LyapunovObjective, target_shape
    from lipnet.train.objectives import make_objective
    from lipnet.train.plan import build_controller, plan_controller

    plant = plants.load("cartpole")
    lqr = plants.lqr(plant)
    plan = plan_controller(plant, lqr)
    ctl = build_controller(plant, plan, (8, 8), "tanh", "frobenius", "clip")
    P, rate = target_shape(plant, ctl)
    obj = LyapunovObjective(plant, make_objective("rollout", plant, lqr, 10), ctl, P, rate, batch=64)
    z = torch.randn(500, 4)
    z = z / z.norm(dim=-1, keepdim=True)
    v = obj._V(obj._from_ball(z))
    assert torch.allclose(v, torch.ones_like(v), atol=1e-5)  # the unit sphere maps onto {V = 1}
    inputs = obj.sample(torch.Generator().manual_seed(0))
    assert (obj._V(inputs["x"]) <= 1 + 1e-5).all()  # PGD stays inside {V ≤ 1}
    assert all(p.requires_grad for p in ctl.parameters())  # and leaves the parameters' flags as they were


def test_roa_target_is_twice_the_lqr_volume_in_a_shape_the_controller_contracts():
    from lipnet.certify.roa import linearisation, mlp_policy, region_box, volume_share
    from lipnet.train.lyapunov import target_shape

    plant = plants.load("cartpole")
    ctl = _anchored_mlp(np.asarray(plants.lqr(plant).K), plant.u_eq, 10.0, 0, eps=0.1)  # a stable loop
    w = region_box(plant)
    a_cl = linearisation(plant, mlp_policy(ctl))
    P_ref = np.diag(1.0 / w**2) * 40.0  # an ellipsoid well inside the box
    ref = {"certified": True, "P": P_ref.tolist(), "rho": 1.0}
    P, rate = target_shape(plant, ctl, reference=ref)
    assert volume_share(P, 1.0, w) == pytest.approx(2 * volume_share(P_ref, 1.0, w), rel=1e-9)
    assert float(np.min(w**2 / np.diag(np.linalg.inv(P)))) >= 1.0 - 1e-9  # inside the box
    # the controller's own linearisation contracts it (V decreases near x_eq, as a certificate needs)
    L = np.linalg.cholesky(P)
    contraction = np.linalg.norm(L.T @ a_cl @ np.linalg.inv(L.T), 2)
    assert contraction < 1 and rate == pytest.approx(min(contraction, 0.999), rel=1e-6)
    # where the box holds no contracted shape that large, the roundest one, whole
    huge = {"certified": True, "P": (np.diag(1.0 / w**2) * 1.01).tolist(), "rho": 1.0}
    P_max, _ = target_shape(plant, ctl, reference=huge)
    assert volume_share(P_max, 1.0, w) < 2 * volume_share(np.asarray(huge["P"]), 1.0, w)
    assert float(np.min(w**2 / np.diag(np.linalg.inv(P_max)))) == pytest.approx(1.0, rel=1e-6)
    # an uncertified reference is ignored
    P_own, _ = target_shape(plant, ctl, reference={"certified": False, "P": P_ref.tolist(), "rho": 1.0})
    assert np.allclose(P_own, target_shape(plant, ctl)[0])


def test_roa_target_comes_from_a_gentler_local_law_within_the_cost_budget_where_the_own_shapes_fall_short():
    from lipnet.certify.roa import linearisation, mlp_policy, region_box, volume_share
    from lipnet.train.lyapunov import COST_BUDGET, _lq_cost, _rate, _shapes, target_shape

    plant = plants.load("ballbeam")
    lin = plants.lqr(plant)
    ctl = _anchored_mlp(np.asarray(lin.K), plant.u_eq, 1.0, 0, eps=0.0)  # the LQR gain, exactly, near x_eq
    w = region_box(plant)
    a_cl = linearisation(plant, mlp_policy(ctl))
    own_best = max(volume_share(S, 1.0, w) for S in _shapes(a_cl, w).values())
    ref_P = np.diag(1.0 / w**2) * 30.0
    ref = {"certified": True, "P": ref_P.tolist(), "rho": 1.0}
    growth = 1.3 * own_best / volume_share(ref_P, 1.0, w)  # more than any shape the LQR gain contracts
    P, rate = target_shape(plant, ctl, reference=ref, growth=growth)
    assert volume_share(P, 1.0, w) == pytest.approx(1.3 * own_best, rel=1e-9)
    assert float(np.min(w**2 / np.diag(np.linalg.inv(P)))) >= 1.0 - 1e-9  # inside the box
    assert _rate(a_cl, P) >= 1.0  # the controller's own gain does not contract it: the stage must change it
    # ... but a gain within the cost budget does, at the returned rate
    A, B, Q, R = (np.asarray(v, dtype=np.float64) for v in (lin.A, lin.B, plant.Q, plant.R))
    k_own = np.linalg.lstsq(B, A - a_cl, rcond=None)[0]
    base = _lq_cost(A, B, k_own, Q, R, w)
    from lipnet.train.lyapunov import BLENDS, _region_gain

    k_roa = _region_gain(plant, A, B, w, a_cl)
    fits = [a for a in BLENDS if _lq_cost(A, B, (1 - a) * k_own + a * k_roa, Q, R, w) <= base * (1 + COST_BUDGET)
            and _rate(A - B @ ((1 - a) * k_own + a * k_roa), P) == pytest.approx(rate, rel=1e-9)]
    assert fits and rate < 1


@settings(max_examples=12, deadline=None)
@given(st.sampled_from(["relu", "tanh"]), st.sampled_from(["clip", "tanh", "none"]), st.booleans(),
       st.integers(0, 10**6), st.floats(0.01, 1.0))
def test_network_enclosures_contain_every_sampled_value_and_jacobian(act, sat, periodic, seed, width):
    """The centred-form Jacobian and the mean-value output enclosure are sound: autograd at sampled points of
    each box lies inside them (and they are no wider than the plain interval pass)."""
    from lipnet.certify.empirical import network_forward
    from lipnet.certify.roa import _mlp_dual, _mlp_pass

    rng = np.random.default_rng(seed)
    n, m, h = 3, 2, 24
    sizes = [n + (1 if periodic else 0), h, h, m]
    ws = [rng.standard_normal((sizes[i + 1], sizes[i])) / math.sqrt(sizes[i]) for i in range(3)]
    bs = [0.3 * rng.standard_normal(sizes[i + 1]) for i in range(3)]
    net = MLP(ws, bs, activation=act, u_low=-np.ones(m), u_high=np.ones(m), saturation=sat,
              periodic=(1,) if periodic else ())
    c = rng.uniform(-1, 1, (5, n))
    r = width * rng.uniform(0.2, 1.0, (5, n))
    box = iv.variable(c - r, c + r)
    out, plain = _mlp_dual(net, box), _mlp_pass(net, box, None)
    assert (out.jhi - out.jlo <= plain.jhi - plain.jlo + 1e-12).all()
    x = torch.as_tensor(c[:, None] + r[:, None] * rng.uniform(-1, 1, (5, 200, n)), dtype=torch.float64)
    jac = torch.func.vmap(torch.func.jacrev(lambda z: network_forward(net, z[None], saturate=True)[0]))(
        x.reshape(-1, n)).reshape(5, 200, m, n).numpy()
    val = network_forward(net, x.reshape(-1, n), saturate=True).reshape(5, 200, m).detach().numpy()
    assert (jac >= out.jlo[:, None] - 1e-12).all() and (jac <= out.jhi[:, None] + 1e-12).all()
    assert (val >= out.lo[:, None] - 1e-12).all() and (val <= out.hi[:, None] + 1e-12).all()


def test_centred_jacobian_is_tighter_than_interval_products_on_a_wide_network():
    from lipnet.certify.roa import _mlp_dual, _mlp_pass

    rng = np.random.default_rng(0)
    n, h = 6, 64
    ws = [rng.standard_normal((h, n)) / math.sqrt(n), rng.standard_normal((h, h)) / math.sqrt(h),
          rng.standard_normal((2, h)) / math.sqrt(h)]
    net = MLP(ws, [np.zeros(h), np.zeros(h), np.zeros(2)], activation="tanh")
    box = iv.variable(np.full((1, n), -0.05), np.full((1, n), 0.05))
    tight, plain = _mlp_dual(net, box), _mlp_pass(net, box, None)
    assert np.max(tight.jhi - tight.jlo) < 0.5 * np.max(plain.jhi - plain.jlo)
