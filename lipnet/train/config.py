"""Training configuration: one dataclass per section, read from and written to TOML.

The run folder's `config.toml` records every choice (auto values resolved), so that
`lipnet train --config RUN_DIR/config.toml --out NEW_DIR` reproduces the run.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lipnet.exceptions import LipnetArgument

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["ControllerConfig", "TrainConfig", "RunConfig", "load_config", "dump_toml"]


@dataclass
class ControllerConfig:
    """Architecture of the controller (see `lipnet.nn.Controller`)."""

    hidden: list[int] = field(default_factory=lambda: [64, 64])
    activation: str = "auto"  # tanh with the LQR expert, relu with the MPC expert (lipnet.train.loop.train)
    layer: str = "frobenius"
    saturation: str = "clip"  # full actuator authority, like the saturated LQR it is compared with
    lipschitz: float = 0.0  # 0: derived from the plant (lipschitz_factor × LQR gain in the scaled coordinates)
    lipschitz_factor: float = 0.0  # 0: auto, 4 with the LQR expert, 16 with the MPC expert (lipnet.train.loop)
    n_x: int = 0  # 0: from the plant; otherwise checked against it
    n_u: int = 0

    def validate(self) -> None:
        """Raise `LipnetArgument` naming the first value no controller can be built from, and its fix."""
        from lipnet.nn.activations import ACTIVATIONS
        from lipnet.nn.controller import SATURATIONS

        if not self.hidden or any(not _is_int(h) or h < 1 for h in self.hidden):
            raise LipnetArgument(f"hidden widths must be one or more integers >= 1 (e.g. --hidden 64,64), got "
                                 f"{self.hidden!r}")
        if max(self.hidden) > 65536 or len(self.hidden) > 64:
            raise LipnetArgument(f"hidden widths {self.hidden!r} are far beyond a controller's size (at most 64 "
                                 "layers of 65536); choose e.g. --hidden 64,64")
        _choice("activation", self.activation, [*ACTIVATIONS, "auto"], "--activation")
        _choice("layer", self.layer, ("frobenius", "spectral", "orthogonal", "plain"), "--layer")
        _choice("saturation", self.saturation, SATURATIONS, "[controller] saturation")
        if not (self.lipschitz == 0.0 or (math.isfinite(self.lipschitz) and self.lipschitz > 0)):
            raise LipnetArgument(f"--lipschitz must be a finite number > 0 (or 0 / absent for the automatic bound), "
                                 f"got {self.lipschitz!r}")
        if not (self.lipschitz_factor == 0.0 or (math.isfinite(self.lipschitz_factor) and self.lipschitz_factor > 0)):
            raise LipnetArgument(f"[controller] lipschitz_factor must be a finite number > 0 (or 0 for the automatic "
                                 f"one: 4, or 16 with the MPC expert), got {self.lipschitz_factor!r}")
        for name in ("n_x", "n_u"):
            if getattr(self, name) < 0:
                raise LipnetArgument(f"[controller] {name} must be >= 0 (0: from the plant), got "
                                     f"{getattr(self, name)!r}")


@dataclass
class TrainConfig:
    """The training loop: objective, optimiser, budget, evaluation and checkpoints."""

    objective: str = "rollout"  # "rollout" (closed-loop cost) or "imitation" (of the expert)
    # The expert the first steps imitate: "lqr" (the saturated LQR), "mpc" (demonstrations of a sampling MPC on
    # the plant itself, lipnet.train.expert) or "auto": mpc where the saturated LQR stabilises less than
    # `AUTO_MPC_BELOW` of the training states (swing-up, large angles), lqr elsewhere.
    expert: str = "auto"
    warmup: int = 50  # imitation steps with the LQR expert: a stabilising start for the rollout cost
    demo_warmup: int = 1500  # imitation steps with the MPC expert's demonstrations
    demos: int = 128  # initial states the MPC expert is run from (each over the plant's horizon)
    # States over the training region (drawn as the rollout batches are, half among those the saturated LQR
    # stabilises) that the MPC expert labels beside its closed-loop demonstrations, which seldom pass the edge of
    # the capture region where a catch needs full torque (lipnet.train.loop._states_to_label)
    expert_labels: int = 4096
    # Weight of the gain error at the equilibrium (objectives.LocalGain) added to both phases; -1 (auto): 1 with the
    # MPC expert (a wide task, where the optimum still linearises to the LQR gain), 0 with the LQR one.
    local_gain: float = -1.0
    dagger: int = 0  # DAgger rounds in the imitation phase: relabel the states the controller visits with the expert
    optimizer: str = "sphere-mm"  # paper 000, algorithm 2: the automatic optimiser that trained every plant tried
    lr: float = 0.0  # 0: the optimiser's default (adam / sgd / manifold-adam and the bench peers take one)
    steps: int = 0  # upper bound on the steps; 0: 2000, or demo_warmup + 600 with the MPC expert (see `stop`)
    stop: str = "plateau"  # "plateau": stop once the evaluation cost stops improving (lipnet.train.stopping); "none"
    max_seconds: float = 1800.0  # wall-clock cap of one training call (0: none)
    batch: int = 128
    horizon: int = 0  # 0: at most 100 steps with the LQR terminal cost; the plant's full horizon with the MPC expert
    initial_states: str = "mix"  # "train": the plant's training distribution; "mix": half from the harder eval one
    terminal: str = "auto"  # rollout terminal cost: "lqr" (P of the linearised plant), "none", "auto" (lqr with
    # the LQR expert; none with the MPC expert, where xᵀPx means nothing far from the equilibrium)
    eval_batch: int = 512
    eval_every: int = 25
    checkpoint_every: int = 25
    rescale: str = "none"  # "path": path-lifting rescaling at initialisation (ReLU only)
    rescale_every: int = 0  # > 0: re-apply one rescaling sweep every K steps
    compile: bool = False  # fuse each rollout step with torch.compile (plants.CompiledRollout); not with sphere-newton
    roa_steps: int = 0  # > 0: a last stage of that many steps adds a Lyapunov-decrease penalty (lipnet train --roa)
    roa_box: list[float] = field(default_factory=list)  # its target box (half-widths); empty: the eval region

    def validate(self) -> None:
        """Raise `LipnetArgument` naming the first value the training loop cannot run with, and its fix."""
        from lipnet.optim.registry import OPTIMIZERS

        _choice("optimizer", self.optimizer, OPTIMIZERS, "--optimizer")
        _choice("objective", self.objective, ("rollout", "imitation"), "--objective")
        _choice("expert", self.expert, ("auto", "lqr", "mpc"), "--expert")
        _choice("initial_states", self.initial_states, ("train", "mix"), "[train] initial_states")
        _choice("terminal", self.terminal, ("auto", "lqr", "none"), "[train] terminal")
        _choice("rescale", self.rescale, ("none", "path"), "--rescale")
        _choice("stop", self.stop, ("plateau", "none"), "--stop")
        if not (math.isfinite(self.max_seconds) and self.max_seconds >= 0):
            raise LipnetArgument(f"--max-seconds must be a finite number >= 0 (0: no cap), got {self.max_seconds!r}")
        for name, low, flag in (("steps", 0, "--steps"), ("batch", 1, "--batch"), ("eval_batch", 1, None),
                                ("eval_every", 1, None), ("checkpoint_every", 1, None), ("warmup", 0, None),
                                ("demo_warmup", 0, None), ("demos", 1, None), ("expert_labels", 0, None),
                                ("dagger", 0, None), ("horizon", 0, None),
                                ("rescale_every", 0, None), ("roa_steps", 0, "--roa-steps")):
            value = getattr(self, name)
            if not _is_int(value) or value < low or value > _LIMITS.get(name, 10**7):
                where = flag or f"[train] {name}"
                raise LipnetArgument(f"{where} must be an integer from {low} to {_LIMITS.get(name, 10**7)}, "
                                     f"got {value!r}")
        if not (math.isfinite(self.local_gain) and (self.local_gain >= 0 or self.local_gain == -1)):
            raise LipnetArgument(f"[train] local_gain must be a finite weight >= 0, or -1 (auto), got "
                                 f"{self.local_gain!r}")
        if not (math.isfinite(self.lr) and self.lr >= 0):
            raise LipnetArgument(f"--lr must be a finite number >= 0 (0: the optimiser's default), got {self.lr!r}")
        box = self.roa_box
        if not isinstance(box, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                and math.isfinite(v) and v > 0 for v in box):
            raise LipnetArgument(f"--roa-box must be positive half-widths, one per state (e.g. 1.5,4), got {box!r}")


@dataclass
class RunConfig:
    """Everything a run needs: the plant spec, the seed and the two sections above."""

    plant: str = "cartpole"
    seed: int = 0
    dtype: str = "float32"
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> RunConfig:
        """Check every value (raises `LipnetArgument` naming it and the fix); returns self."""
        if not isinstance(self.plant, str) or not self.plant.strip():
            raise LipnetArgument(f"plant must be a plant spec such as 'cartpole', got {self.plant!r}")
        if not _is_int(self.seed) or not 0 <= self.seed < MAX_SEED:
            raise LipnetArgument(f"--seed must be an integer from 0 to {MAX_SEED - 1}, got {self.seed!r}")
        _choice("dtype", self.dtype, ("float32", "float64"), "dtype")
        self.controller.validate()
        self.train.validate()
        return self

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        data = dict(data)
        sections = {"controller": ControllerConfig, "train": TrainConfig}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key in sections:
                kwargs[key] = _build(sections[key], value, key)
            elif key in {f.name for f in dataclasses.fields(cls)}:
                kwargs[key] = value
            else:
                raise LipnetArgument(f"unknown config key {key!r}; valid top-level keys: plant, seed, dtype, "
                                     "[controller], [train]")
        return cls(**kwargs)


MAX_SEED = 2**63 - 1  # torch generators take 64-bit seeds; the evaluation states use seed + 1


def seed_arg(text: str) -> int:
    """argparse type of every `--seed`: an integer in [0, MAX_SEED) (torch and numpy generators take 64 bits)."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer from 0 to {MAX_SEED - 1}, got {text!r}") from None
    if not 0 <= value < MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be an integer from 0 to {MAX_SEED - 1}, got {text}")
    return value


# Upper limits that keep a run within a machine's memory and a human's patience (the default of others: 10**7).
_LIMITS = {"batch": 10**6, "eval_batch": 10**6, "horizon": 100_000, "demos": 100_000,
           "expert_labels": 10**6}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _choice(name: str, value, valid, flag: str) -> None:
    if value not in valid:
        raise LipnetArgument(f"{flag} must be one of {', '.join(valid)}; got {value!r}")


def _build(cls, values: dict, section: str):
    if not isinstance(values, dict):
        raise LipnetArgument(f"[{section}] must be a table, got {values!r}")
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(names)
    if unknown:
        raise LipnetArgument(f"unknown key(s) {sorted(unknown)} in [{section}]; valid: {', '.join(names)}")
    out = {}
    for key, value in values.items():
        default = getattr(cls(), key)
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if default is not None and not isinstance(value, type(default)):
            raise LipnetArgument(f"[{section}] {key} must be {type(default).__name__}, got {value!r}")
        out[key] = value
    return cls(**out)


def load_config(path: str | Path) -> RunConfig:
    """Read a TOML run configuration (missing keys take their defaults)."""
    path = Path(path)
    if not path.exists():
        raise LipnetArgument(f"config file {path} does not exist")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise LipnetArgument(f"config file {path} is not valid TOML: {exc}") from None
    return RunConfig.from_dict(data)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} to TOML")


def dump_toml(data: dict[str, Any]) -> str:
    """Write a dict of scalars, lists and one level of tables as TOML."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for k, v in data.items():
        if isinstance(v, dict):
            lines += ["", f"[{k}]"] + [f"{kk} = {_toml_value(vv)}" for kk, vv in v.items() if vv is not None]
    return "\n".join(lines) + "\n"
