"""The learning-rate-free peers (lipnet.optim.peers) by name, the clear error for a missing package, and the
random linear plant family (plants.random_linear)."""

import copy
import importlib.util
import sys

import numpy as np
import pytest
import torch

import plants
from lipnet.optim.peers import PeerOptimizer
from lipnet.optim.registry import OPTIMIZERS, PEERS, make_optimizer, optimizer_class
from lipnet.train.config import RunConfig
from lipnet.train.loop import _optimizer_step, train
from lipnet.train.objectives import make_objective
from lipnet.train.plan import build_controller, plan_controller

PACKAGE = {"prodigy": "prodigyopt", "dog": "dog", "dadapt-adam": "dadaptation", "schedulefree-adamw": "schedulefree",
           "muon": None}


def _available(name: str) -> bool:
    pkg = PACKAGE[name]
    return hasattr(torch.optim, "Muon") if pkg is None else importlib.util.find_spec(pkg) is not None


def _needs(name):
    return pytest.mark.skipif(not _available(name), reason=f"{name}: package not installed")


def _setup(seed: int = 0):
    plant = plants.load("double_integrator")
    lqr = plants.lqr(plant)
    gen = torch.Generator().manual_seed(seed)
    plan = plan_controller(plant, lqr, lipschitz=0.0, factor=4.0, generator=gen, depth=2)
    controller = build_controller(plant, plan, [16], "tanh", "frobenius", "clip", generator=gen)
    objective = make_objective("rollout", plant, lqr, 30, "lqr")
    x0 = plant.sample_initial(64, "train", generator=torch.Generator().manual_seed(seed + 1))
    return controller, objective, x0


@pytest.mark.parametrize("name", [pytest.param(n, marks=_needs(n)) for n in PEERS])
def test_peer_lowers_the_loss_at_its_defaults(name):
    assert name in OPTIMIZERS
    controller, objective, x0 = _setup()
    opt = make_optimizer(name, controller)
    with torch.no_grad():
        before = float(objective(controller, x0))
    for _ in range(40):
        loss = _optimizer_step(opt, objective, controller, x0)
        assert torch.isfinite(loss)
    with torch.no_grad():
        after = float(objective(controller, x0))
    assert after < before, (name, before, after)


@pytest.mark.parametrize("name", [pytest.param(n, marks=_needs(n)) for n in PEERS])
def test_peer_state_round_trips_and_skips_a_non_finite_step(name):
    controller, objective, x0 = _setup()
    opt = make_optimizer(name, controller)
    for _ in range(3):
        _optimizer_step(opt, objective, controller, x0)
    saved = copy.deepcopy((controller.state_dict(), opt.state_dict()))  # torch's state_dict holds live tensors
    other = make_optimizer(name, controller)
    other.load_state_dict(copy.deepcopy(saved[1]))
    a = _optimizer_step(opt, objective, controller, x0)
    after_a = [p.detach().clone() for p in controller.parameters()]
    controller.load_state_dict(saved[0])
    b = _optimizer_step(other, objective, controller, x0)
    assert float(a.detach()) == float(b.detach())  # a fresh optimiser loaded from the state continues exactly (resume)
    assert all(torch.equal(p, q) for p, q in zip(controller.parameters(), after_a, strict=True))
    before = [p.detach().clone() for p in controller.parameters()]
    loss = opt.step(lambda: torch.tensor(float("nan")))
    assert not torch.isfinite(loss) and opt.last_info["skipped"] == "nonfinite_loss"
    assert all(torch.equal(p, q) for p, q in zip(controller.parameters(), before, strict=True))


@pytest.mark.parametrize("name", ["prodigy", "dog", "dadapt-adam", "schedulefree-adamw"])
def test_missing_package_is_one_clear_line(name, monkeypatch):
    monkeypatch.setitem(sys.modules, PACKAGE[name], None)  # find_spec and import both see it as absent
    with pytest.raises(ValueError) as err:
        optimizer_class(name)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"optimizer {name!r} needs the ") and "pip install 'lipnet[bench]'" in msg

def test_missing_package_fails_before_the_run_folder(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "prodigyopt", None)
    cfg = RunConfig(plant="double_integrator")
    cfg.train.optimizer = "prodigy"
    with pytest.raises(ValueError, match="needs the prodigyopt package"):
        train(cfg, tmp_path / "run", progress=False, log=lambda *a: None)
    assert not (tmp_path / "run").exists()


def test_muon_without_torch_muon(monkeypatch):
    monkeypatch.delattr(torch.optim, "Muon", raising=False)
    with pytest.raises(ValueError, match="optimizer 'muon' needs torch.optim.Muon"):
        optimizer_class("muon")


def test_in_tree_import_error_surfaces_as_itself(monkeypatch):
    monkeypatch.setitem(OPTIMIZERS, "broken", "lipnet.optim.no_such_module:Nothing")
    with pytest.raises(ImportError):
        optimizer_class("broken")


@_needs("schedulefree-adamw")
def test_schedulefree_parameters_hold_the_evaluation_point():
    controller, objective, x0 = _setup()
    opt = make_optimizer("schedulefree-adamw", controller)
    for _ in range(5):
        _optimizer_step(opt, objective, controller, x0)
    inner = opt.parts[0]
    assert not inner.param_groups[0]["train_mode"]  # x between steps: evaluation and checkpoints see the average


@_needs("muon")
def test_muon_takes_the_matrices_and_adamw_the_rest():
    controller, _, _ = _setup()
    opt = make_optimizer("muon", controller)
    muon, adamw = opt.parts
    assert isinstance(muon, torch.optim.Muon) and isinstance(adamw, torch.optim.AdamW)
    assert all(p.ndim == 2 for g in muon.param_groups for p in g["params"])
    assert all(p.ndim != 2 for g in adamw.param_groups for p in g["params"])
    assert isinstance(opt, PeerOptimizer)


@_needs("prodigy")
def test_a_peer_trains_through_the_loop(tmp_path):
    cfg = RunConfig(plant="double_integrator")
    cfg.controller.hidden = [16, 16]
    for key, value in dict(optimizer="prodigy", steps=8, batch=32, eval_batch=32, eval_every=4, checkpoint_every=4,
                           horizon=30, warmup=2).items():
        setattr(cfg.train, key, value)
    result = train(cfg, tmp_path / "run", progress=False, log=lambda *a: None, stop_after=4)
    resumed = train(cfg, tmp_path / "run", resume=True, progress=False, log=lambda *a: None)
    assert resumed.summary["optimizer"] == "prodigy" and len(result.metrics) == 4
    assert np.isfinite(resumed.summary["evaluation"]["cost_ratio_to_lqr_optimum"])


# --- the random linear plant family --------------------------------------------------------------------------
def test_random_linear_is_deterministic_and_covers_the_family():
    seen = set()
    for seed in range(12):
        spec = f"plants.random_linear:random_linear?seed={seed}"
        p, q = plants.load(spec), plants.load(spec)
        assert np.array_equal(p.A, q.A) and np.array_equal(p.B, q.B) and np.array_equal(p.Q, q.Q)
        assert 2 <= p.n_x <= 8 and 1 <= p.n_u <= min(3, p.n_x)
        rho = max(abs(np.linalg.eigvals(p.A)))
        seen.add(rho > 1)
        scale = np.asarray(p.init_train.scale)
        assert scale.max() / scale.min() > 1.0  # badly scaled states
        K = plants.lqr(p).K
        assert max(abs(np.linalg.eigvals(p.A - p.B @ K))) < 1  # stabilisable: the LQR exists and stabilises
    assert seen == {True, False}
    big = plants.load("plants.random_linear:random_linear?seed=1&n_x=8&n_u=3&unstable=1")
    assert (big.n_x, big.n_u) == (8, 3) and max(abs(np.linalg.eigvals(big.A))) > 1


def test_pvtol_is_the_hover_linearisation():
    p = plants.load("plants.random_linear:pvtol")
    assert (p.n_x, p.n_u) == (6, 2) and p.u_high is None
    assert plants.load("plants.random_linear:pvtol?u_max=5").u_high.tolist() == [5.0, 5.0]


# --- the measured shortfalls: lipnet train warns ------------------------------------------------------------------
@pytest.mark.parametrize(("optimizer", "plant", "warns"), [
    ("dog", "plants.random_linear:random_linear?seed=0", True),  # open-loop unstable (spectral radius 1.1)
    ("dog", "plants.random_linear:pvtol", True),  # integrators: radius 1
    ("muon", "plants.random_linear:random_linear?seed=3", True),
    ("muon", "plants.random_linear:pvtol", False),  # measured 1.0003 there
    ("dog", "plants.random_linear:random_linear?seed=1", False),  # stable: measured 1.0011
    ("sphere-mm", "plants.random_linear:random_linear?seed=0", False),
])
def test_train_warns_where_an_optimizer_was_measured_to_fall_short(optimizer, plant, warns, capsys):
    from lipnet.commands.train import warn_shortfall

    cfg = RunConfig(plant=plant)
    cfg.train.optimizer = optimizer
    message = warn_shortfall(cfg)
    err = capsys.readouterr().err
    assert bool(message) == warns and (f"warning: --optimizer {optimizer}" in err) == warns
    if warns:
        assert "LQR optimum" in message and "--optimizer sphere-mm" in message and "\n" not in err.strip()


def test_random_linear_builtin_wrappers_parse_text_options_and_write_the_spec():
    from plants.errors import PlantSpecError
    from plants.random_linear import BUILTINS

    p = BUILTINS["random_linear"](seed="3", n_x="5")
    q = plants.load("plants.random_linear:random_linear?seed=3&n_x=5")
    assert p.spec == "random_linear?n_x=5&seed=3" and np.array_equal(p.A, q.A)
    assert BUILTINS["pvtol"](u_max="5").spec == "pvtol?u_max=5"
    for bad in ({"foo": "1"}, {"seed": "1.5"}, {"n_x": "100"}):
        with pytest.raises(PlantSpecError):
            BUILTINS["random_linear"](**bad)
