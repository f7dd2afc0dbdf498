"""The stopping rule: training ends on a plateau of the evaluation cost, never while it still improves."""

from __future__ import annotations

import json

from lipnet.train.stopping import PATIENCE, STALE_STEPS, plateau, stale


def _rows(values, every=25, start=0):
    rows = []
    for i in range(1, every * len(values) + 1):
        k = i // every - 1
        rows.append({"step": start + i, "eval_cost_ratio": values[k] if i % every == 0 else ""})
    return rows


def test_stops_on_a_converged_toy():
    values = [2.0 * 0.5**k + 1.0 for k in range(8)] + [1.0] * 30  # geometric convergence, then flat
    reason = None
    for n in range(1, len(values) + 1):
        reason = plateau(_rows(values[:n]), phase_start=0)
        if reason:
            break
    assert reason is not None and reason.startswith("converged")
    assert 8 < n <= 8 + PATIENCE + 1 + 200 // 25  # stops soon after the flat part begins, not at its end


def test_does_not_stop_while_still_improving():
    values = [1.0 + 0.5 * 0.99**k for k in range(200)]  # slow but steady (relative fall > 1e-3 per 100 steps)
    for n in range(1, len(values) + 1):
        assert plateau(_rows(values[:n]), phase_start=0) is None


def test_never_stops_before_the_minimum_and_ignores_the_previous_phase():
    flat = [1.0] * 7  # 175 steps: below MIN_STEPS
    assert plateau(_rows(flat), phase_start=0) is None
    assert plateau(_rows([1.0] * 20), phase_start=400) is None  # every row belongs to an earlier phase
    assert plateau(_rows([1.0] * 20), phase_start=0) is not None


def test_a_phase_that_keeps_its_best_stops_once_the_best_is_stale():
    start = 1500
    assert stale(start, start + STALE_STEPS - 1, start) is None
    reason = stale(start, start + STALE_STEPS, start)
    assert reason and f"step {start}" in reason
    recent = start + 400  # a new best restarts the count
    assert stale(recent, recent + STALE_STEPS - 1, start) is None
    assert stale(recent, recent + STALE_STEPS, start) is not None
    assert stale(0, start + STALE_STEPS - 1, start) is None  # a best from before the phase counts from its start


def test_training_stops_on_the_plateau_and_says_why(tmp_path):
    from lipnet.cli import main

    run = tmp_path / "run"
    assert main(["train", "--plant", "double_integrator", "--hidden", "8,8", "--batch", "32", "--steps", "3000",
                 "--no-progress", "--out", str(run)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stopped"].startswith("converged") and summary["steps"] < 3000
    assert summary["evaluation"]["cost_ratio_to_lqr_optimum"] < 1.05
    assert "converged" in (run / "report.md").read_text()
    again = tmp_path / "fixed"
    assert main(["train", "--plant", "double_integrator", "--hidden", "8,8", "--batch", "32", "--steps", "210",
                 "--stop", "none", "--no-progress", "--out", str(again)]) == 0
    fixed = json.loads((again / "summary.json").read_text())
    assert fixed["steps"] == 210 and fixed["stopped"].startswith("reached the step budget")


def test_auto_expert_keeps_the_lqr_on_an_unconstrained_linear_plant(tmp_path):
    """A slow, badly scaled linear plant where few starts settle in the horizon: the LQR is still the optimum, so the
    MPC expert (and its horizon-only cost, which reads below the LQR optimum) must not be chosen."""
    import numpy as np

    import plants
    from lipnet.train.config import RunConfig
    from lipnet.train.loop import _choose_expert

    rng = np.random.default_rng(7)
    S = np.diag([1.0, 10.0, 0.1])
    A = S @ (rng.normal(size=(3, 3)) * 0.4 + np.eye(3) * 0.1) @ np.linalg.inv(S)
    np.savez(tmp_path / "held.npz", A=A, B=S @ rng.normal(size=(3, 1)), dt=0.0)
    plant = plants.load(f"{tmp_path / 'held.npz'}?dt=0.05&x0_std=1,10,0.1")
    expert, why = _choose_expert(plant, plants.lqr(plant), RunConfig().train, 0, None)
    assert expert == "lqr" and "optimum" in why
