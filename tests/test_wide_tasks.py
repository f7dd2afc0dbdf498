"""Issue 16: the `wide` (and cart-pole `swingup`) task presets leave the saturated LQR's region of success."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import plants
from lipnet.train.loop import Evaluator

# (spec, a property the preset sets) for every preset beyond the pendulum swing-up.
TASKS = [("cartpole?task=wide", "dt", 0.04), ("cartpole?task=swingup", "horizon", 200),
         ("quadrotor2d?task=wide", "horizon", 100), ("ballbeam?task=wide", "horizon", 150),
         ("vanderpol?task=wide", "horizon", 120)]


@pytest.mark.parametrize("spec,attr,value", TASKS)
def test_task_loads_and_its_spec_round_trips(spec, attr, value):
    p = plants.load(spec)
    assert p.spec == spec and plants.load(p.spec).spec == p.spec
    assert getattr(p, attr) == pytest.approx(value)
    assert p.init_train.kind == "uniform" and np.allclose(p.init_eval.scale, p.init_train.scale)


def test_task_options_are_what_the_docstrings_say():
    quad = plants.load("quadrotor2d?task=wide")
    assert quad.u_high[0] == pytest.approx(1.5 * 0.027 * 9.8 / 2) and quad.dt == 0.04
    assert plants.load("quadrotor2d?task=wide&twr=2").u_high[0] == pytest.approx(0.027 * 9.8)  # explicit wins
    swing = plants.load("cartpole?task=swingup")
    assert np.allclose(np.diag(swing.Q), [1, 0.1, 5, 0.1]) and np.allclose(swing.R, [[0.01]])
    assert np.allclose(swing.init_eval.scale, [0.5, 0.5, np.pi, 1.0])
    assert plants.load("vanderpol?task=wide").u_high[0] == 0.75


@pytest.mark.parametrize("spec", [t[0] for t in TASKS])
def test_the_saturated_lqr_fails_on_a_share_of_the_task(spec):
    p = plants.load(spec)
    lqr = plants.lqr(p)
    x0 = p.sample_initial(64, "eval", generator=torch.Generator().manual_seed(1))
    rate = float(Evaluator(p, lqr, x0, p.horizon, "none").lqr_success.double().mean())
    assert 0.0 < rate < 0.8, rate
