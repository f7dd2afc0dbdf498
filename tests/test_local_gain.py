"""The equilibrium-gain term of wide-task training (objectives.LocalGain)."""

import torch

import plants
from lipnet.train.objectives import LocalGain


class _Zero:
    name = "zero"

    def __call__(self, policy, x0):
        return policy(x0).sum() * 0.0


def _setup():
    plant = plants.load("pendulum?task=swingup")
    lqr = plants.lqr(plant)
    return plant, lqr, LocalGain(_Zero(), plant, lqr.K)


def test_the_lqr_gain_has_zero_error_and_a_lazy_gain_does_not():
    plant, lqr, term = _setup()
    exact = lqr.policy.__class__(lqr.K, lqr.x_eq, lqr.u_eq, clip=False)
    lazy = lqr.policy.__class__(0.7 * lqr.K, lqr.x_eq, lqr.u_eq, clip=False)
    assert float(term.gain_error(exact)) < 1e-20
    assert abs(float(term.gain_error(lazy)) - 0.09) < 1e-9  # ‖0.3 K S‖² / ‖K S‖²


def test_the_term_is_differentiable_and_evaluates_under_no_grad():
    plant, lqr, term = _setup()
    lin = torch.nn.Linear(2, 1, dtype=torch.float64)
    loss = term(lin, torch.zeros(4, 2, dtype=torch.float64))
    loss.backward()
    assert lin.weight.grad is not None and lin.weight.grad.abs().sum() > 0
    with torch.no_grad():
        value = term(lin, torch.zeros(4, 2, dtype=torch.float64))
    assert torch.isfinite(value) and not value.requires_grad
    assert abs(float(value) - float(loss)) < 1e-12


def test_a_bad_weight_is_refused_with_the_option_name():
    import pytest

    from lipnet.exceptions import LipnetArgument
    from lipnet.train.config import RunConfig

    for bad in (-0.5, float("nan"), float("inf")):
        cfg = RunConfig()
        cfg.train.local_gain = bad
        with pytest.raises(LipnetArgument, match=r"\[train\] local_gain"):
            cfg.validate()
    cfg = RunConfig()
    cfg.train.local_gain = 2.0
    cfg.validate()
