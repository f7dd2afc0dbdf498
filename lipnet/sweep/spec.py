"""What a sweep is: fixed values, one or more grids, seeds, an optional random sample; expanded into trials.

Keys are run-configuration keys: dotted (`train.optimizer`, `controller.hidden`, `plant`) or the short names users
know from `lipnet train` (`plant`, `optimizer`, `lr`, `lipschitz`, `seed`, `steps`, `hidden`, `batch`, ...; a
dash works for an underscore: `eval-batch`). Every trial is checked (its configuration validated, its plant
loaded) when the sweep is expanded, so bad input fails before any folder is touched.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import itertools
import json
import math
import random
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lipnet.exceptions import LipnetArgument

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["SweepSpec", "Trial", "expand", "resolve_key", "parse_grid", "parse_set", "coerce_value", "short_name",
           "valid_keys", "trial_id"]

_TOP = ("plant", "seed", "dtype")
SWEEP_FILE_KEYS = ("seeds", "random", "sample_seed", "certify", "roa", "config", "set", "grid")


def _sections() -> dict[str, type]:
    from lipnet.train.config import ControllerConfig, TrainConfig

    return {"controller": ControllerConfig, "train": TrainConfig}


def _fields() -> dict[str, str]:
    """Short name -> dotted path of every run-configuration key."""
    out = {name: name for name in _TOP}
    for section, cls in _sections().items():
        for f in dataclasses.fields(cls):
            out.setdefault(f.name, f"{section}.{f.name}")
    return out


def valid_keys() -> list[str]:
    """The short names `--grid` and `--set` accept (dotted `train.X` / `controller.X` work as well)."""
    return list(_fields())


def resolve_key(name: str, where: str = "--grid") -> str:
    """The dotted run-configuration path of a key given by its short name, its dotted path or its flag spelling."""
    key = str(name).strip().lstrip("-").replace("-", "_")
    fields = _fields()
    if key in fields:
        return fields[key]
    if key in fields.values():
        return key
    close = difflib.get_close_matches(key, list(fields) + list(fields.values()), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise LipnetArgument(f"{where}: unknown configuration key {name!r}{hint}; valid keys: {', '.join(fields)} "
                         "(or dotted, e.g. train.optimizer)")


def short_name(path: str) -> str:
    return path.rsplit(".", 1)[-1]


def _default(path: str):
    from lipnet.train.config import RunConfig

    obj: Any = RunConfig()
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _parse_bool(text: str, key: str, where: str) -> bool:
    low = text.strip().lower()
    if low in ("true", "yes", "on", "1"):
        return True
    if low in ("false", "no", "off", "0"):
        return False
    raise LipnetArgument(f"{where}: {key} takes true or false, got {text!r}")


def _parse_ints(text: str, key: str, where: str) -> list[int]:
    body = text.strip()
    parts = body[1:-1].split(",") if body.startswith("[") and body.endswith("]") else re.split(r"[x×;]", body)
    try:
        return [int(p.strip()) for p in parts]
    except ValueError:
        raise LipnetArgument(f"{where}: {key} takes widths like 64x64 (or [64,64]), got {text!r}") from None


def coerce_value(path: str, value: Any, where: str = "--grid") -> Any:
    """`value` (a string from the command line, or a TOML value) as the type of the configuration key `path`."""
    key = short_name(path)
    default = _default(path)
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            return _parse_bool(value, key, where)
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise LipnetArgument(f"{where}: {key} takes an integer, got {value!r}")
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = float(value)
        elif isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise LipnetArgument(f"{where}: {key} takes a number, got {value!r}") from None
        else:
            raise LipnetArgument(f"{where}: {key} takes a number, got {value!r}")
        if not math.isfinite(value):
            raise LipnetArgument(f"{where}: {key} must be a finite number, got {value!r}")
        return value
    elif isinstance(default, str):
        if isinstance(value, str) and value.strip():
            return value.strip()
        raise LipnetArgument(f"{where}: {key} takes a non-empty string, got {value!r}")
    elif isinstance(default, list):
        if isinstance(value, str):
            return _parse_ints(value, key, where)
        if isinstance(value, int) and not isinstance(value, bool):
            return [value]
        if isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return list(value)
        raise LipnetArgument(f"{where}: {key} takes widths like 64x64 (TOML: [64, 64]), got {value!r}")
    raise LipnetArgument(f"{where}: {key} cannot be set to {value!r}")  # pragma: no cover


def split_values(text: str) -> list[str]:
    """Split `v1,v2,...` on the commas outside quotes and brackets; quotes are removed (`"a?x=1,2",b`)."""
    out, buf, depth, quote = [], [], 0, ""
    for ch in text:
        if quote:
            if ch == quote:
                quote = ""
            else:
                buf.append(ch)
            continue
        if ch in "\"'":
            quote = ch
        elif ch == "[":
            depth += 1
            buf.append(ch)
        elif ch == "]":
            depth -= 1
            buf.append(ch)
        elif ch == "," and depth == 0:
            out.append("".join(buf).strip())
            buf = []
        else:
            buf.append(ch)
    if quote or depth:
        raise LipnetArgument(f"unbalanced quote or bracket in {text!r}")
    out.append("".join(buf).strip())
    return out


def _assignment(text: str, flag: str) -> tuple[str, str]:
    name, sep, rest = str(text).partition("=")
    if not sep or not name.strip():
        raise LipnetArgument(f"{flag} takes KEY=VALUE{'S' if flag == '--grid' else ''}, e.g. {flag} "
                             f"{'optimizer=sphere-mm,agd' if flag == '--grid' else 'steps=300'}; got {text!r}")
    return name.strip(), rest


def parse_grid(items: list[str]) -> dict[str, list]:
    """`--grid key=v1,v2` options as {dotted path: [typed values]} (each checked: known key, values, no repeats)."""
    grid: dict[str, list] = {}
    for item in items or []:
        name, rest = _assignment(item, "--grid")
        path = resolve_key(name, "--grid")
        if path in grid:
            raise LipnetArgument(f"--grid {short_name(path)} is given twice; list all its values in one --grid")
        where = f"--grid {name}"
        try:
            texts = split_values(rest)
        except LipnetArgument as exc:
            raise LipnetArgument(f"{where}: {exc}") from None
        if not rest.strip() or any(not t for t in texts):
            raise LipnetArgument(f"{where}: empty value list; give one or more values, e.g. --grid "
                                 f"{name}=V1,V2")
        grid[path] = _unique([coerce_value(path, t, where) for t in texts], where)
    return grid


def parse_set(items: list[str]) -> dict[str, Any]:
    """`--set key=value` options as {dotted path: typed value}."""
    out: dict[str, Any] = {}
    for item in items or []:
        name, rest = _assignment(item, "--set")
        path = resolve_key(name, "--set")
        if not rest.strip():
            raise LipnetArgument(f"--set {name}: empty value")
        out[path] = coerce_value(path, rest, f"--set {name}")
    return out


def _unique(values: list, where: str) -> list:
    seen = []
    for v in values:
        if v in seen:
            raise LipnetArgument(f"{where}: value {v!r} is listed twice")
        seen.append(v)
    return seen


def _flatten(table: dict, where: str) -> dict[str, Any]:
    """A TOML table of keys (nested `train = {optimizer = ...}` or dotted) as {dotted path: value}."""
    if not isinstance(table, dict):
        raise LipnetArgument(f"{where} must be a table, got {table!r}")
    out: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict) and key in _sections():
            for sub, v in value.items():
                out[resolve_key(f"{key}.{sub}", where)] = v
        else:
            out[resolve_key(key, where)] = value
    return out


@dataclass
class SweepSpec:
    """A sweep definition; `expand` turns it into trials.

    base: fixed values {dotted path: value} for every trial (`--set`, a sweep file's [set]).
    grids: one or more grids {dotted path: [values]}; the trials are the union of their Cartesian products.
    seeds: > 0 adds `seed = 0 .. seeds-1` to every grid.  random: > 0 keeps that many trials, drawn without
    replacement with `sample_seed`.  config: a run configuration TOML the trials start from.
    certify / roa: certify each trained controller (`lipnet.certify`), with the region of attraction or not.
    """

    base: dict[str, Any] = field(default_factory=dict)
    grids: list[dict[str, list]] = field(default_factory=list)
    seeds: int = 0
    random: int = 0
    sample_seed: int = 0
    config: str | None = None
    certify: bool = False
    roa: bool = False

    @classmethod
    def from_toml(cls, path: str | Path) -> SweepSpec:
        """Read a sweep file (see `lipnet sweep --help`)."""
        path = Path(path)
        if not path.is_file():
            raise LipnetArgument(f"sweep file {path} does not exist")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise LipnetArgument(f"sweep file {path} is not valid TOML: {' '.join(str(exc).split())}") from None
        unknown = set(data) - set(SWEEP_FILE_KEYS)
        if unknown:
            raise LipnetArgument(f"sweep file {path}: unknown key(s) {sorted(unknown)}; valid: "
                                 f"{', '.join(SWEEP_FILE_KEYS)} (grid values go in [grid])")
        where = f"sweep file {path}"
        base = {p: coerce_value(p, v, f"{where} [set] {short_name(p)}")
                for p, v in _flatten(data.get("set", {}), f"{where} [set]").items()}
        raw = data.get("grid", [])
        tables = [raw] if isinstance(raw, dict) else raw
        if not isinstance(tables, list):
            raise LipnetArgument(f"{where}: grid must be a table [grid] or tables [[grid]]")
        grids = []
        for i, table in enumerate(tables):
            g = {}
            for p, values in _flatten(table, f"{where} [grid]").items():
                w = f"{where} grid {short_name(p)}" + (f" (grid {i + 1})" if len(tables) > 1 else "")
                if not isinstance(values, list):
                    values = [values]
                if not values:
                    raise LipnetArgument(f"{w}: empty value list; give one or more values")
                if short_name(p) == "hidden" and all(isinstance(v, int) for v in values):
                    values = [values]  # hidden = [64, 64] is one value
                g[p] = _unique([coerce_value(p, v, w) for v in values], w)
            grids.append(g)
        config = data.get("config")
        if config is not None:
            config = str((path.parent / str(config)).resolve()) if not Path(str(config)).is_absolute() else config
        spec = cls(base=base, grids=grids, config=config)
        for name, kind in (("seeds", int), ("random", int), ("sample_seed", int), ("certify", bool), ("roa", bool)):
            if name in data:
                value = data[name]
                if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                    raise LipnetArgument(f"{where}: {name} must be {'an integer' if kind is int else 'true or false'}"
                                         f", got {value!r}")
                setattr(spec, name, value)
        return spec

    def with_cli(self, grid: dict[str, list], base: dict[str, Any]) -> SweepSpec:
        """This spec with `--grid` axes added to every grid and `--set` values over its own."""
        grids = self.grids or [{}]
        for g in grids:
            clash = set(g) & set(grid)
            if clash:
                raise LipnetArgument(f"--grid {short_name(sorted(clash)[0])} is also a grid key of the sweep file; "
                                     "give it in one place")
        return dataclasses.replace(self, base={**self.base, **base},
                                   grids=[{**g, **grid} for g in grids] if (grid or self.grids) else [])


@dataclass
class Trial:
    """One run of a sweep: its id (the folder name), the swept values (dotted path -> value) and its config dict."""

    id: str
    values: dict[str, Any]
    config: dict[str, Any]


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "x".join(str(v) for v in value)
    return str(value)


def trial_id(values: dict[str, Any], config: dict[str, Any]) -> str:
    """`key-value__key-value-HASH`: the swept values, readable, then 6 hex digits of the whole configuration.

    The digest makes the id change whenever anything in the trial's configuration does (a `--set`, a base config),
    so a re-run never mistakes another configuration's folder for a finished trial.
    """
    readable = "__".join(f"{short_name(p)}-{_fmt(v)}" for p, v in values.items())
    readable = re.sub(r"[^A-Za-z0-9._=+-]+", "_", readable).strip("._-")[:100]
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:6]
    return f"{readable}-{digest}" if readable else f"trial-{digest}"


def _base_config(spec: SweepSpec):
    from lipnet.train.config import RunConfig, load_config

    return load_config(spec.config) if spec.config else RunConfig()


def _apply(cfg_dict: dict, values: dict[str, Any]) -> dict:
    out = json.loads(json.dumps(cfg_dict))
    for path, value in values.items():
        parts = path.split(".")
        target = out
        for part in parts[:-1]:
            target = target[part]
        target[parts[-1]] = value
    return out


def expand(spec: SweepSpec, check: bool = True) -> list[Trial]:
    """The trials of a sweep, each configuration validated and its plant loaded (`check`); touches no file.

    Raises `LipnetArgument` (or the plant's `PlantSpecError`) naming the first bad input.
    """
    from lipnet.train.config import RunConfig

    if spec.seeds < 0 or spec.random < 0:
        raise LipnetArgument(f"--seeds and --random must be >= 1 when given, got {spec.seeds or spec.random}")
    grids = [_normalise_grid(g) for g in spec.grids]
    spec_base = {}
    for key, value in spec.base.items():
        path = resolve_key(key, "--set")
        spec_base[path] = coerce_value(path, value, f"--set {short_name(path)}")
    if spec.seeds:
        grids = grids or [{}]
        for g in grids:
            if "seed" in g:
                raise LipnetArgument("seeds are given twice (--seeds and a grid over seed); keep one")
            g["seed"] = list(range(spec.seeds))
    if not grids or not any(grids):
        raise LipnetArgument("nothing to sweep: give at least one --grid KEY=V1,V2 (or --seeds N, or --file "
                             "sweep.toml with a [grid] table)")
    for g in grids:
        for path, values in g.items():
            if not values:
                raise LipnetArgument(f"--grid {short_name(path)}: empty value list; give one or more values")
        clash = set(g) & set(spec_base)
        if clash:
            raise LipnetArgument(f"{short_name(sorted(clash)[0])} is both fixed (--set / [set]) and swept (--grid); "
                                 "keep one")
    base = _apply(_base_config(spec).to_dict(), spec_base)
    trials: list[Trial] = []
    seen: dict[str, Trial] = {}
    plants_cache: dict[str, Any] = {}
    for g in grids:
        keys = list(g)
        for combo in itertools.product(*(g[k] for k in keys)):
            values = dict(zip(keys, combo, strict=True))
            cfg_dict = _apply(base, values)
            where = "trial " + ", ".join(f"{short_name(p)}={_fmt(v)}" for p, v in values.items())
            try:
                cfg = RunConfig.from_dict(cfg_dict)
                if check:
                    cfg.validate()
                    cfg.plant = _canonical_plant(cfg, plants_cache)
                cfg_dict = cfg.to_dict()
            except (LipnetArgument, ValueError, TypeError) as exc:
                raise type(exc)(f"{where}: {' '.join(str(exc).split())}") from None
            t = Trial(id=trial_id(values, cfg_dict), values=values, config=cfg_dict)
            if t.id in seen:
                if seen[t.id].config == t.config:
                    continue  # two grids that share a trial run it once
                raise LipnetArgument(f"two trials would share the folder {t.id}; make their grid values differ")
            seen[t.id] = t
            trials.append(t)
    if spec.random:
        rng = random.Random(spec.sample_seed)
        keep = set(rng.sample(sorted(seen), min(spec.random, len(trials))))
        trials = [t for t in trials if t.id in keep]
    return trials


def _normalise_grid(grid: dict[str, list]) -> dict[str, list]:
    """A grid with its keys as dotted paths and its values typed (a grid built in Python may use short names)."""
    out: dict[str, list] = {}
    for key, values in grid.items():
        path = resolve_key(key, "--grid")
        if path in out:
            raise LipnetArgument(f"--grid {short_name(path)} is given twice; list all its values once")
        where = f"--grid {short_name(path)}"
        values = list(values) if isinstance(values, (list, tuple, range)) else [values]
        out[path] = _unique([coerce_value(path, v, where) for v in values], where)
    return out


def _canonical_plant(cfg, cache: dict) -> str:
    """The plant's canonical spec (file specs with absolute paths, so a worker elsewhere reads the same file)."""
    from lipnet.train.loop import _check_config

    key = json.dumps([cfg.plant, cfg.controller.n_x, cfg.controller.n_u, cfg.train.optimizer, cfg.train.compile])
    if key not in cache:
        plant = _check_config(cfg)  # loads the plant; dimensions, optimizer and --compile consistent with it
        cache[key] = plant.spec
    return cache[key]
