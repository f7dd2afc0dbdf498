"""When training stops: a plateau of the held-out evaluation cost, the step budget, or a wall-clock cap.

The rule reads only the run's own metrics (so a resumed run stops where the uninterrupted one would): after at
least `MIN_STEPS` steps of the phase it watches, training stops once the best evaluation cost of the last
`PATIENCE` evaluations is not `RTOL` (relatively) below the best one before them. The optimisers' step sizes are
automatic, so a plateau of the objective, not a learning-rate schedule, is what ends a run.
"""

from __future__ import annotations

import math

__all__ = ["plateau", "MIN_STEPS", "PATIENCE", "RTOL", "AUTO_STEPS", "AUTO_ROLLOUT_STEPS_MPC"]

MIN_STEPS = 200  # the rule never stops a phase before this many of its steps
PATIENCE = 4  # evaluations (eval_every steps apart) without a relative improvement of RTOL
RTOL = 1e-3  # 0.1 % per 100 steps: the quadrotor's slow tail (0.06 % per 100 steps) ends, PVTOL's 0.6 % does not
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
