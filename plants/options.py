"""Plant options: parsing `key=value` strings, checking keys, and writing them back into a spec string.

Limits shared by every plant kind (built-in, `.npz`, function plants, `LinearPlant`, `FunctionPlant`):
`horizon` <= `MAX_HORIZON` = 100000 steps (a rollout's time and autograd memory grow linearly with it: 10⁵ steps
of a 128-state batch already take minutes and gigabytes; longer experiments want a larger `dt`) and `substeps`
<= `MAX_SUBSTEPS` = 1000 RK4 substeps per sample (4000 evaluations of `f` per step; a model that needs more is
stiff and wants a smaller `dt` or an implicit integrator outside lipnet).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np

from .errors import PlantSpecError

__all__ = ["parse_query", "parse_value", "format_value", "make_spec", "check_keys", "diag_option", "positive_int",
           "MAX_HORIZON", "MAX_SUBSTEPS"]

MAX_HORIZON = 100_000  # steps per rollout (see the module docstring)
MAX_SUBSTEPS = 1000  # RK4 substeps per sample
_LIMIT_FIX = {
    "horizon": "a longer experiment needs a larger dt, not more steps",
    "substeps": "a model that needs more is stiff: use a smaller dt",
}


def parse_value(text: str, key: str = "value") -> float | list[float]:
    """`"0.5"` → 0.5, `"1,2,3"` → [1.0, 2.0, 3.0]; raises `PlantSpecError` naming `key` otherwise."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        vals = [float(p) for p in parts]
    except ValueError:
        raise PlantSpecError(f"option {key}={text!r} is not a number or a comma-separated list of numbers") from None
    if not all(math.isfinite(v) for v in vals):
        raise PlantSpecError(f"option {key}={text!r} is not finite; give a finite number")
    return vals[0] if len(vals) == 1 else vals


def parse_query(query: str) -> dict[str, str]:
    """`"m=0.2&dt=0.01"` → `{"m": "0.2", "dt": "0.01"}` (values kept as text)."""
    out: dict[str, str] = {}
    for item in filter(None, query.split("&")):
        key, sep, val = item.partition("=")
        key, val = key.strip(), val.strip()
        if not sep or not key or not val:
            raise PlantSpecError(f"option {item!r} is not of the form key=value (options: name?key=value&key=value)")
        if key in out:
            raise PlantSpecError(f"option {key!r} is given twice")
        out[key] = val
    return out


def format_value(value) -> str:
    """The text of an option value that parses back to exactly the same number(s)."""
    if isinstance(value, str):
        value = parse_value(value)
    arr = np.asarray(value, dtype=float).reshape(-1)
    if arr.size != 1 or np.ndim(value) > 0:
        return ",".join(format_value(float(v)) for v in arr)
    v = float(arr[0])
    return str(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)


TEXT_OPTIONS = ("task",)  # options whose value is a name, not numbers


def make_spec(base: str, options: Mapping[str, object]) -> str:
    """`base?k1=v1&k2=v2` with keys sorted (just `base` without options)."""
    if not options:
        return base
    return base + "?" + "&".join(f"{k}={v if k in TEXT_OPTIONS else format_value(v)}"
                                 for k, v in sorted(options.items()))


def check_keys(given: Iterable[str], valid: Iterable[str], what: str) -> None:
    """Raise `PlantSpecError` listing the valid keys if any of `given` is not among `valid`."""
    valid = list(valid)
    bad = [k for k in given if k not in valid]
    if bad:
        raise PlantSpecError(f"unknown option {', '.join(map(repr, bad))} for {what}; valid options: "
                             f"{', '.join(sorted(valid))}")


def diag_option(value, n: int, key: str) -> np.ndarray:
    """A diagonal matrix from a scalar or `n` values (options `q=`, `r=`)."""
    arr = np.asarray(value, dtype=float).reshape(-1)
    if arr.size == 1:
        arr = np.full(n, arr[0])
    if arr.size != n:
        raise PlantSpecError(f"option {key} has {arr.size} values; give 1 or {n}")
    if (arr < 0).any():
        raise PlantSpecError(f"option {key} has negative entries {arr.tolist()}; cost weights must be >= 0")
    return np.diag(arr)


def positive_int(value, key: str, maximum: int | None = None) -> int:
    """`value` as an int in `[1, maximum]` (an integral float such as 5.0 counts), or `PlantSpecError` naming `key`."""
    try:
        # bool is an int subclass, but n_x=True is a mistake, not 1
        number = float(value) if not isinstance(value, (bool, str)) and np.ndim(value) == 0 else math.nan
        whole = number == int(number)
    except (TypeError, ValueError, OverflowError):  # text, arrays, inf, nan
        whole = False
    if not whole or number < 1:
        raise PlantSpecError(f"{key} must be a positive integer, got {value!r}")
    n = int(number)
    if maximum is not None and n > maximum:
        why = f" ({_LIMIT_FIX[key]})" if key in _LIMIT_FIX else ""
        raise PlantSpecError(f"{key}={format_value(n)} is above the limit of {maximum}"
                             f"{' steps' if key == 'horizon' else ''}; give {key} <= {maximum}{why}")
    return n
