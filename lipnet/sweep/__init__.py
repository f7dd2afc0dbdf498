"""Sweeps: many `lipnet train` runs from one grid, locally or on a Ray cluster (`lipnet sweep`).

`SweepSpec` (fixed values, grids, seeds, a random sample; `SweepSpec.from_toml`) -> `expand` -> trials, each a
normal run folder `SWEEP_DIR/<trial-id>/`; `run_sweep` runs them (Ray tasks or `backend="local"`), skips the
finished, resumes the killed and writes `summary.csv` and `summary.png`. See `runner` for why plain Ray tasks.
"""

from .runner import (
    RAY_MISSING,
    SUMMARY_CSV,
    SUMMARY_PNG,
    SWEEP_MARKER,
    SweepResult,
    check_address,
    check_sweep_dir,
    read_run,
    run_sweep,
    run_trial,
    trial_mode,
)
from .spec import SweepSpec, Trial, coerce_value, expand, parse_grid, parse_set, resolve_key, trial_id, valid_keys

__all__ = ["SweepSpec", "Trial", "expand", "run_sweep", "run_trial", "SweepResult", "parse_grid", "parse_set",
           "resolve_key", "coerce_value", "valid_keys", "trial_id", "check_sweep_dir", "check_address", "read_run",
           "trial_mode", "SWEEP_MARKER", "SUMMARY_CSV", "SUMMARY_PNG", "RAY_MISSING"]
