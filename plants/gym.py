"""Gymnasium wrapper: `plants.gym.make(spec)` gives a `gymnasium.Env` over any plant.

Importing this module registers gymnasium ids (gymnasium ≥ 1.0 has no plugin discovery, so `import plants.gym`
first, or name the module in the id: `gymnasium.make("plants.gym:lipnet/Pendulum-v0")`): `lipnet/<Class>-v0`
for each built-in (`lipnet/Pendulum-v0`, `lipnet/CartPole-v0`, ..., `lipnet/DoubleIntegrator-v0`; see `env_id`)
and `lipnet/Plant-v0` for any spec (`gymnasium.make("lipnet/Plant-v0", spec="path/to/plant.npz")`). Keyword
arguments of `gymnasium.make` are `split`, `divergence` and plant options (`horizon=50`, `m=1.2`).

Observation: the raw state (float32, unbounded Box); action: the input in actuator units (Box at the actuator
limits, unbounded where the plant has none; actions are clipped to the limits before they are applied);
reward: `−stage_cost(x, u)`; an episode is truncated after `plant.horizon` steps and terminated early when the
state becomes non-finite or leaves `divergence` × the evaluation box around the equilibrium.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch

from .base import Plant
from .errors import PlantRuntimeError
from .library import BUILTIN_ODE
from .spec import builtin_names

__all__ = ["make", "PlantEnv", "env_id", "GENERIC_ID"]

GENERIC_ID = "lipnet/Plant-v0"


@functools.cache
def _env_class():
    import gymnasium
    from gymnasium import spaces

    class _PlantEnv(gymnasium.Env):
        """A plant as a Gymnasium environment (see the module docstring)."""

        metadata = {"render_modes": []}

        def __init__(self, plant: Plant, split: str = "train", divergence: float = 20.0):
            super().__init__()
            if split not in ("train", "eval"):
                raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
            self.plant, self.split, self.divergence = plant, split, float(divergence)
            inf = np.full(plant.n_u, np.inf, np.float32)
            low = -inf if plant.u_low is None else plant.u_low.astype(np.float32)
            high = inf if plant.u_high is None else plant.u_high.astype(np.float32)
            self.action_space = spaces.Box(low, high, (plant.n_u,), np.float32)
            self.observation_space = spaces.Box(-np.inf, np.inf, (plant.n_x,), np.float32)
            self._x = torch.as_tensor(plant.x_eq, dtype=torch.float64)[None]
            self._t = 0
            self._bound = self.divergence * np.maximum(np.asarray(plant.init_eval.scale, float), 1e-6)

        def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
            super().reset(seed=seed)
            split = (options or {}).get("split", self.split)
            gen = torch.Generator().manual_seed(int(self.np_random.integers(2 ** 62)))
            self._x = self.plant.sample_initial(1, split, generator=gen, dtype=torch.float64)
            self._t = 0
            return self._x[0].numpy().astype(np.float32), {}

        def step(self, action):
            u = torch.as_tensor(_action_array(self.plant, action))
            u = self.plant.clip(u)
            with torch.no_grad():
                reward = -float(self.plant.stage_cost(self._x, u)[0])
                try:
                    self._x = self.plant.step(self._x, u)
                except PlantRuntimeError as e:  # the user's plant code failed: say at which step of the episode
                    raise e.at_step(self._t) from (e.__cause__ or e)
            self._t += 1
            x = self._x[0].numpy()
            dev = np.abs(x - self.plant.x_eq)
            terminated = bool(not np.isfinite(x).all() or (dev > self._bound).any())
            truncated = bool(self._t >= self.plant.horizon and not terminated)
            return x.astype(np.float32), reward, terminated, truncated, {"u": u[0].numpy()}

    return _PlantEnv


def PlantEnv(plant: Plant, split: str = "train", divergence: float = 20.0):  # noqa: N802 (class-like factory)
    """A `gymnasium.Env` over `plant`; `split` picks the initial-state distribution used by `reset`."""
    return _env_class()(plant, split=split, divergence=divergence)


def make(spec: str | Plant, split: str = "train", divergence: float = 20.0, **overrides: Any):
    """`plants.load(spec, **overrides)` wrapped as a `gymnasium.Env`."""
    from .spec import load

    return PlantEnv(load(spec, **overrides), split=split, divergence=divergence)


def _action_array(plant: Plant, action) -> np.ndarray:
    """`action` as a `[1, n_u]` float64 array, or a ValueError naming the expected shape (not numpy's reshape)."""
    try:
        a = np.asarray(action, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"action must be numbers, an array of shape ({plant.n_u},), got {action!r}") from None
    if a.size != plant.n_u:
        inputs = f"n_u = {plant.n_u} input{'s' if plant.n_u > 1 else ''}: {', '.join(plant.input_names)}"
        raise ValueError(f"action must have shape ({plant.n_u},) ({inputs}), got shape {a.shape}")
    return a.reshape(1, plant.n_u)


def env_id(name: str) -> str:
    """The gymnasium id of the built-in plant `name`: its class name, e.g. `msd` → `lipnet/MassSpringDamper-v0`."""
    cls = BUILTIN_ODE.get(name)
    title = cls.__name__ if cls is not None else "".join(w.capitalize() for w in name.split("_"))
    return f"lipnet/{title}-v0"


def from_registry(spec: str | None = None, split: str = "train", divergence: float = 20.0,
                  render_mode: str | None = None, **overrides: Any):
    """The entry point of the registered ids: `make(spec, split, divergence, **overrides)`."""
    if spec is None:
        raise ValueError(f"{GENERIC_ID} needs a plant spec: gymnasium.make({GENERIC_ID!r}, spec='cartpole?m=0.2')")
    if render_mode is not None:
        raise ValueError(f"plant environments have no render modes, got render_mode={render_mode!r}")
    return make(spec, split=split, divergence=divergence, **overrides)


def _register() -> None:
    try:
        import gymnasium
    except ImportError:  # make() says so when it is used; importing plants.gym must not fail for it
        return
    ids = {env_id(name): {"spec": name} for name in builtin_names()}
    ids[GENERIC_ID] = {}
    for id_, kwargs in ids.items():
        if id_ not in gymnasium.registry:  # re-importing (importlib.reload) must not warn about overriding
            gymnasium.register(id_, entry_point="plants.gym:from_registry", kwargs=kwargs)


_register()
