"""`plants.load(spec)`: the one resolver from a plant spec string to a `Plant`.

Spec forms (each may carry options `?key=value&key=value`; a value is a number or a comma-separated list):

* a built-in name: `pendulum`, `cartpole`, `quadrotor2d`, `dcmotor`, `msd`, `vanderpol`, `ballbeam` (nonlinear;
  options: their physical parameters and `dt`, `substeps`, `horizon`, `q`, `r`) and `double_integrator`
  (linear, continuous `[[0, 1], [0, 0]]`, `[0, 1]ᵀ` discretised by ZOH at `dt` = 0.1 s; linear options);
* a path to an `.npz` holding `A`, `B` and optionally `C`, `D`, `dt` (one number; absent or 0: continuous,
  discretised by exact ZOH at option `dt`, default `DEFAULT_DT` = 0.05 s), `Q`, `R`, `x0_std` or `x0_box`,
  `u_max`, `state_names`, `state_units`, `input_names` (real, finite numbers; names as text); options:
  `LINEAR_OPTIONS`;
* `package.module:function` or `path/to/file.py:function`. Options whose names are parameters of the function
  are passed to it as floats (lists for comma-separated values); the rest apply to the plant it returns. The
  function must return one of
    - a `control.StateSpace` / `control.TransferFunction` (continuous or discrete; linear options apply),
    - a `plants.Plant` (option `horizon` applies),
    - a dict `{"f": f, "n_x": int, "n_u": int, "dt": float, ...}` with optional keys `substeps`, `x0_std` or
      `x0_box`, `x_eq`, `u_eq`, `u_low`, `u_high`, `Q`, `R`, `horizon`, `state_names`, `state_units`,
      `input_names`, or a tuple `(f, n_x, n_u, dt)`, where `f(x, u) -> ẋ` is the continuous-time dynamics
      written in torch on batched `[b, n_x]`, `[b, n_u]` tensors (integrated by RK4; options `dt`, `substeps`,
      `horizon`, `q`, `r`). `f` must return a new tensor (never modify `x` or `u` in place) and stay in torch
      (numpy, `.item()` or `.detach()` hide the dynamics from autograd: `plants.linearize` refuses such a step).
      `FunctionPlant` checks `f` once at load time on a probe batch at `(x_eq, u_eq)`; an exception it raises
      later is a `PlantRuntimeError` naming the plant and the step.

Initial states, the same for every kind: `x0_std` is the std of a Gaussian around `x_eq`, `x0_box` the
half-widths of a uniform box (give one; default `x0_std = 1`); evaluation uses 1.5× either. The built-ins use
their documented boxes.

Limits (`plants.MAX_HORIZON`, `plants.MAX_SUBSTEPS`): `horizon` is a whole number in 1..100000 steps and
`substeps` in 1..1000, for every plant kind; `n_x`, `n_u` are positive integers.

A file spec (`.npz`, `path/to/file.py:function`) is stored in `plant.spec` with its absolute, resolved path, so
the spec names the same file from any working directory.

Every failure raises `PlantSpecError` naming the problem and what would be valid.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
from typing import Any

import numpy as np

from .base import Plant
from .errors import PlantSpecError
from .library import BUILTIN_LINEAR, BUILTIN_ODE
from .linear import LINEAR_OPTIONS, LinearPlant, apply_linear_options
from .ode import COMMON_OPTIONS, FunctionPlant
from .options import (
    MAX_HORIZON,
    check_keys,
    diag_option,
    format_value,
    make_spec,
    parse_query,
    parse_value,
    positive_int,
)

__all__ = ["load", "builtin_names", "NPZ_KEYS"]

NPZ_KEYS = ("A", "B", "C", "D", "dt", "Q", "R", "x0_std", "x0_box", "u_max", "state_names", "state_units",
            "input_names")
_NAME_KEYS = ("state_names", "state_units", "input_names")


def builtin_names() -> list[str]:
    """Names of the built-in plants."""
    return sorted([*BUILTIN_ODE, *BUILTIN_LINEAR])


def _valid_forms() -> str:
    return (f"a built-in name ({', '.join(builtin_names())}), a path to an .npz file, 'package.module:function' "
            f"or 'path/to/file.py:function', each optionally followed by ?key=value&...")


def load(spec: str | Plant, **overrides: Any) -> Plant:
    """The plant named by `spec` (see the module docstring), with `overrides` applied as options.

    The returned plant's `spec` is a canonical string that `load` turns back into the same plant.
    """
    if isinstance(spec, Plant):
        if overrides:
            raise PlantSpecError("overrides need a spec string, not a Plant instance")
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise PlantSpecError(f"a plant spec must be a non-empty string, got {spec!r}; valid: {_valid_forms()}")
    base, _, query = spec.strip().partition("?")
    base = base.strip()
    options = parse_query(query)
    options.update({k: format_value(v) for k, v in overrides.items()})
    if base in BUILTIN_ODE:
        return BUILTIN_ODE[base](**options)
    if base in BUILTIN_LINEAR:
        return BUILTIN_LINEAR[base](**options)
    if base.endswith(".npz"):
        return _load_npz(base, options)
    if ":" in base:
        return _load_function(base, options)
    if "/" in base or os.sep in base or "." in base:
        raise PlantSpecError(f"cannot read plant {base!r}: a file spec must end in .npz (or be file.py:function)")
    raise PlantSpecError(f"unknown plant {base!r}; valid: {_valid_forms()}")


def _load_npz(given: str, options: dict[str, str]) -> LinearPlant:
    path = _absolute(given)
    if not os.path.isfile(path):
        raise PlantSpecError(f"plant file {given!r} not found{_looked_in(given, path)} (an .npz with arrays A, B "
                             f"and optional {', '.join(NPZ_KEYS[2:])})")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as e:  # corrupt or not an npz: say so instead of numpy's internals
        raise PlantSpecError(f"cannot read {path!r} as .npz: {type(e).__name__}: {e}") from e
    check_keys(arrays, NPZ_KEYS, f"arrays in {path!r}")
    for key in ("A", "B"):
        if key not in arrays:
            raise PlantSpecError(f"{path!r} has no array {key!r} (has: {', '.join(sorted(arrays)) or 'none'}); "
                                 f"an .npz plant needs A and B")
    for key, arr in arrays.items():
        _check_npz_array(path, key, arr)
    dt = 0.0
    if "dt" in arrays:
        if arrays["dt"].size != 1:
            raise PlantSpecError(f"dt in {path!r} must be one number (the sample time in s, or 0 for a continuous "
                                 f"model), got {arrays['dt'].size} values {arrays['dt'].reshape(-1).tolist()}")
        dt = float(arrays["dt"].reshape(-1)[0])
    if dt < 0:
        raise PlantSpecError(f"dt in {path!r} is {dt}; it must be > 0 (discrete) or 0/absent (continuous)")
    defaults = {k: arrays[k] for k in ("Q", "R", "x0_std", "x0_box", "u_max", "C", "D") if k in arrays}
    kw = apply_linear_options(arrays["A"], arrays["B"], dt, options, defaults, what=f"plant file {path!r}")
    names = {k: [str(s) for s in np.asarray(arrays[k]).reshape(-1)] for k in _NAME_KEYS if k in arrays}
    name = os.path.splitext(os.path.basename(path))[0]
    return LinearPlant(**kw, name=name, spec=make_spec(path, options), **names)


def _check_npz_array(path: str, key: str, arr: np.ndarray) -> None:
    """Refuse complex, non-numeric or non-finite numeric arrays (names are text), naming the key and the fix."""
    if key in _NAME_KEYS:
        return
    if arr.dtype.kind == "c":  # numpy would keep the real part with only a ComplexWarning
        raise PlantSpecError(f"array {key!r} in {path!r} is complex; a plant needs real numbers (save "
                             f"{key}.real if its imaginary part is 0)")
    if arr.dtype.kind not in "fiub":
        raise PlantSpecError(f"array {key!r} in {path!r} holds text or objects (dtype {arr.dtype}); "
                             f"save it as numbers, e.g. np.asarray({key}, dtype=float)")
    if not np.isfinite(arr.astype(float)).all():
        raise PlantSpecError(f"array {key!r} in {path!r} has NaN or infinite entries; every entry must be finite")


def _absolute(path: str) -> str:
    """`path` absolute and resolved, so a plant's spec names the same file from any working directory."""
    return os.path.realpath(os.path.expanduser(path))


def _looked_in(given: str, path: str) -> str:
    return "" if given == path else f" (looked for {path})"


def _import_target(target: str):
    """The module named by `target`: a dotted module name or the path of an existing .py file."""
    if target.endswith(".py"):
        mod_name = "_plants_user_" + hashlib.sha1(os.path.abspath(target).encode()).hexdigest()[:12]
        mspec = importlib.util.spec_from_file_location(mod_name, target)
        module = importlib.util.module_from_spec(mspec)
        try:
            mspec.loader.exec_module(module)
        except Exception as e:  # the user's file: report it as a spec problem
            raise PlantSpecError(f"importing {target!r} failed: {type(e).__name__}: {e}") from e
        return module
    if "/" in target or os.sep in target:
        raise PlantSpecError(f"{target!r} looks like a path but does not end in .py (use path/to/file.py:function)")
    try:
        return importlib.import_module(target)
    except ImportError as e:
        raise PlantSpecError(f"cannot import module {target!r}: {e}") from e


def _function_kwargs(fn, options: dict[str, str], plant_keys) -> tuple[dict, dict]:
    """Split options into the function's keyword arguments (parsed) and the remaining plant options."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    accepted = [k for k, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    fn_kw = {k: parse_value(v, k) for k, v in options.items()
             if k in accepted or (var_kw and k not in plant_keys)}
    rest = {k: v for k, v in options.items() if k not in fn_kw}
    return fn_kw, rest


def _load_function(base: str, options: dict[str, str]) -> Plant:
    target, _, fname = base.rpartition(":")
    if not target or not fname.isidentifier():
        raise PlantSpecError(f"{base!r} is not of the form 'package.module:function' or 'path/file.py:function'")
    if target.endswith(".py"):
        if not os.path.isfile(target):
            raise PlantSpecError(f"plant file {target!r} not found{_looked_in(target, _absolute(target))}")
        target = _absolute(target)
        base = f"{target}:{fname}"
    module = _import_target(target)
    fn = getattr(module, fname, None)
    if fn is None or not callable(fn):
        found = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_"))
        raise PlantSpecError(f"{target!r} has no function {fname!r}; callables found: {', '.join(found) or 'none'}")
    plant_keys = set(LINEAR_OPTIONS) | set(COMMON_OPTIONS)
    fn_kw, rest = _function_kwargs(fn, options, plant_keys)
    try:
        result = fn(**fn_kw)
    except Exception as e:  # the user's function: report it as a spec problem
        raise PlantSpecError(f"{base}({', '.join(f'{k}={v}' for k, v in fn_kw.items())}) raised "
                             f"{type(e).__name__}: {e}") from e
    spec = make_spec(base, options)
    plant = _plant_from_result(result, rest, base, fname, spec)
    plant.spec = spec
    return plant


def _plant_from_result(result, rest: dict[str, str], base: str, fname: str, spec: str) -> Plant:
    import control

    what = f"the plant returned by {base!r}"
    if isinstance(result, (control.StateSpace, control.TransferFunction)):
        sys = control.ss(result) if isinstance(result, control.TransferFunction) else result
        if sys.dt is True:
            raise PlantSpecError(f"{base!r} returned a discrete system with unspecified dt (dt=True); give a number")
        kw = apply_linear_options(sys.A, sys.B, float(sys.dt or 0.0), rest, what=what)
        return LinearPlant(**kw, C=np.asarray(sys.C, float), D=np.asarray(sys.D, float), name=fname)
    if isinstance(result, Plant):
        check_keys(rest, ["horizon"], what)
        if "horizon" in rest:
            result.horizon = positive_int(parse_value(rest["horizon"], "horizon"), "horizon", MAX_HORIZON)
        return result
    if isinstance(result, tuple):
        if len(result) != 4:
            raise PlantSpecError(f"{base!r} returned a tuple of {len(result)} items; expected (f, n_x, n_u, dt)")
        result = dict(zip(("f", "n_x", "n_u", "dt"), result, strict=True))
    if isinstance(result, dict):
        return _function_plant(result, rest, base, fname, spec)
    raise PlantSpecError(f"{base!r} returned {type(result).__name__}; expected a control.StateSpace or "
                         f"TransferFunction, a plants.Plant, a dict {{'f', 'n_x', 'n_u', 'dt', ...}} or a tuple "
                         f"(f, n_x, n_u, dt)")


def _function_plant(result: dict, rest: dict[str, str], base: str, fname: str, spec: str) -> FunctionPlant:
    """A `FunctionPlant` from the dict a user function returned, with the spec's options applied."""
    missing = [k for k in ("f", "n_x", "n_u", "dt") if k not in result]
    if missing:
        raise PlantSpecError(f"{base!r} returned a dict without {', '.join(missing)}; it needs f, n_x, n_u, dt")
    check_keys(rest, COMMON_OPTIONS, f"the plant returned by {base!r}")
    kw = dict(result)
    vals = {k: parse_value(v, k) for k, v in rest.items()}
    for key in ("dt", "substeps", "horizon"):
        if key in vals:
            kw[key] = vals[key]
    if "q" in vals:
        kw["Q"] = diag_option(vals["q"], positive_int(kw["n_x"], "n_x"), "q")
    if "r" in vals:
        kw["R"] = diag_option(vals["r"], positive_int(kw["n_u"], "n_u"), "r")
    kw.setdefault("name", fname)
    kw["spec"] = spec  # so the load-time checks of f name the user's plant
    try:
        return FunctionPlant(**kw)
    except TypeError as e:
        raise PlantSpecError(f"{base!r} returned a dict with bad keys: {e}") from e
