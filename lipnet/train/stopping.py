"""When training stops: a plateau of the held-out evaluation cost, the step budget, or a wall-clock cap.

The rule reads only the run's own metrics (so a resumed run stops where the uninterrupted one would): after at
least `MIN_STEPS` steps of the phase it watches, training stops once the best evaluation cost of the last
`PATIENCE` evaluations is not `RTOL` (relatively) below the best one before them. The optimisers' step sizes are
automatic, so a plateau of the objective, not a learning-rate schedule, is what ends a run.

Where a run keeps its best validated controller (the rollout phase after the MPC expert's imitation), it also
stops once that controller is `STALE_STEPS` steps old: the run returns it, so later iterates only count if they
beat it. Measured (benchmarks/beyond_lqr.py, same seeds, two runs at once): the cart-pole swing-up's rollout
phase never beats the imitated controller, yet ran 200 steps of 1.4 s before the evaluation-cost plateau ended
it (288 → 192 s, same controller); cart-pole wide 196/280/333 → 142/120/106 s for 98.2/98.0/95.9 →
98.2/97.5/95.3 % stabilised; ball-beam 282/296 → 236/144 s, the same controllers.
"""

from __future__ import annotations

import math

__all__ = ["plateau", "stale", "MIN_STEPS", "PATIENCE", "RTOL", "STALE_STEPS", "AUTO_STEPS",
           "AUTO_ROLLOUT_STEPS_MPC"]

MIN_STEPS = 200  # the rule never stops a phase before this many of its steps
PATIENCE = 4  # evaluations (eval_every steps apart) without a relative improvement of RTOL
RTOL = 1e-3  # 0.1 % per 100 steps: the quadrotor's slow tail (0.06 % per 100 steps) ends, PVTOL's 0.6 % does not
STALE_STEPS = 100  # steps without a new validated best before a phase that keeps its best stops
AUTO_STEPS = 2000  # the step budget with the LQR expert when --steps is not given
AUTO_ROLLOUT_STEPS_MPC = 600  # the rollout-phase budget after the MPC expert's imitation


def plateau(rows: list[dict], phase_start: int, min_steps: int = MIN_STEPS, patience: int = PATIENCE,
            rtol: float = RTOL) -> str | None:
    """A reason to stop (the evaluation cost has converged) or None, from the metrics rows of the run."""
    evals = [(r["step"], float(r["eval_cost_ratio"])) for r in rows
             if r["step"] > phase_start and r["eval_cost_ratio"] not in ("", None)]
    if not evals or evals[-1][0] - phase_start < min_steps or len(evals) <= patience:
        return None
    values = [v for _, v in evals]
    if not all(math.isfinite(v) for v in values[-patience:]):
        return None
    before, recent = min(values[:-patience]), min(values[-patience:])
    if recent < before * (1 - rtol):
        return None
    span = evals[-1][0] - evals[-patience - 1][0]
    return (f"converged: the evaluation cost improved by less than {rtol:.0e} (relative) over the last {span} steps "
            f"(best {min(before, recent):.6g} × the LQR optimum)")


def stale(best_step: int, step: int, phase_start: int, stale_steps: int = STALE_STEPS) -> str | None:
    """A reason to stop (the kept, validated controller has not been beaten for `stale_steps` steps) or None."""
    age = step - max(best_step, phase_start)
    if age < stale_steps:
        return None
    return (f"converged: no controller of the last {age} steps beat the best validated one (step {best_step}), "
            "which the run returns")
